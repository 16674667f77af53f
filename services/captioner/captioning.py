"""One caption: the prompt for the language and place, the image without its location data,
the backend's answer, and the language the answer is really written in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.captioner.backends import CaptionBackend, CaptionTask
from services.captioner.language import LanguageCheck
from services.captioner.prompts import PromptBook
from services.common.captions import CaptionRequest, CaptionResponse
from services.common.errors import UnavailableError
from services.common.images import MEDIA_TYPES, ImageLimits, base64_bytes, validate_image
from services.common.location import strip_location
from services.common.storage import ObjectStore, validate_key


@dataclass
class Captioner:
    backend: CaptionBackend
    prompts: PromptBook
    language_check: LanguageCheck
    store: ObjectStore
    limits: ImageLimits
    timeout_seconds: float

    def _image(self, request: CaptionRequest) -> tuple[bytes, str]:
        """Validated bytes, location data removed (nothing of it may reach a remote VLM)."""
        if request.key is not None:
            raw = self.store.get(validate_key(request.key))
        else:
            raw = base64_bytes(request.image or "", "image")
        info = validate_image(raw, self.limits)
        return strip_location(raw), MEDIA_TYPES.get(info.format, "application/octet-stream")

    async def caption(self, request: CaptionRequest) -> CaptionResponse:
        """Bounded by the timeout as a whole; a VLM that takes longer is unavailable (503)."""
        choice = self.prompts.choose(request)  # an unsupported language fails before any work
        image, media_type = await asyncio.to_thread(self._image, request)
        try:
            answer = await asyncio.wait_for(
                self.backend.caption(CaptionTask(image, media_type, choice)),
                self.timeout_seconds,
            )
        except TimeoutError:
            raise UnavailableError(
                f"no caption within {self.timeout_seconds:g} s; retry later"
            ) from None
        detected = await asyncio.to_thread(self.language_check.detect, answer.text)
        return CaptionResponse(
            caption=answer.text,
            language_requested=choice.prompts.language,
            language=detected,
            language_ok=self.language_check.matches(detected, choice.prompts.language),
            backend=self.backend.name.value,
            model=answer.model,
            prompt_kind=choice.kind,
            prompt=choice.text,
            location=choice.location,
        )
