"""One caption: the prompt for the language and place, the image without its location data,
the backend's answer, and the language the answer is really written in."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.captioner.backends import CaptionBackend, CaptionTask
from services.captioner.language import LanguageCheck
from services.captioner.prompts import PromptBook
from services.common.captions import CaptionRequest, CaptionResponse
from services.common.errors import ServiceError, UnavailableError
from services.common.images import MEDIA_TYPES, ImageLimits, base64_bytes, validate_image
from services.common.location import strip_location
from services.common.storage import ObjectStore, validate_key


class CaptionMetrics:
    """What operators watch: captions by outcome (wrong-language answers and those too short
    to tell apart) and VLM time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.captions = Counter(
            "seavl_captioner_captions",
            "Captions asked for, by backend, requested language and outcome (ok; "
            "wrong_language: another language detected with confidence; unknown: too short or "
            "too unsure to tell; or the error code)",
            ["backend", "language", "outcome"],
            registry=registry,
        )
        self.backend_seconds = Histogram(
            "seavl_captioner_backend_seconds",
            "Seconds the backend took for one caption",
            ["backend"],
            registry=registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
        )


@dataclass
class Captioner:
    backend: CaptionBackend
    prompts: PromptBook
    language_check: LanguageCheck
    store: ObjectStore
    limits: ImageLimits
    timeout_seconds: float
    metrics: CaptionMetrics

    def _image(self, request: CaptionRequest) -> tuple[bytes, str]:
        """Validated bytes, location data removed (nothing of it may reach a remote VLM)."""
        if request.key is not None:
            raw = self.store.get(validate_key(request.key))
        else:
            raw = base64_bytes(request.data or "", "data")
        info = validate_image(raw, self.limits)
        return strip_location(raw), MEDIA_TYPES.get(info.format, "application/octet-stream")

    async def caption(self, request: CaptionRequest) -> CaptionResponse:
        """Bounded by the timeout as a whole; a VLM that takes longer is unavailable (503)."""
        choice = self.prompts.choose(request)  # an unsupported language fails before any work
        image, media_type = await asyncio.to_thread(self._image, request)
        backend, language = self.backend.name.value, choice.prompts.language.value
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(
                self.backend.caption(CaptionTask(image, media_type, choice, request.key)),
                self.timeout_seconds,
            )
        except TimeoutError:
            self.metrics.captions.labels(backend, language, "timeout").inc()
            raise UnavailableError(
                f"no caption within {self.timeout_seconds:g} s; retry later"
            ) from None
        except ServiceError as exc:
            self.metrics.captions.labels(backend, language, exc.code).inc()
            raise
        self.metrics.backend_seconds.labels(backend).observe(time.perf_counter() - started)
        detection = await asyncio.to_thread(self.language_check.detect, answer.text, choice.places)
        outcome = self.language_check.judge(detection, choice.prompts.language)
        self.metrics.captions.labels(backend, language, outcome.value).inc()
        return CaptionResponse(
            caption=answer.text,
            language_requested=choice.prompts.language,
            language=detection.language,
            language_confidence=detection.confidence,
            language_ok=outcome.language_ok,
            backend=self.backend.name.value,
            model=answer.model,
            prompt_kind=choice.kind,
            prompt=choice.text,
            location=choice.location,
        )
