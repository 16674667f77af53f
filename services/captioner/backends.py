"""Where captions come from: an OpenAI-compatible VLM server, or the offline-labels default.

The VLM is asked as the SEA-VL paper asked: the prompt and the image in one user message,
greedy decoding (temperature 0) and no repetition penalty. A VLM that is down, overloaded or
too slow is `UnavailableError` (503 now, a retry later for queued jobs); an answer without a
caption is `VlmAnswerError`, recorded as a failure.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from services.captioner.config import BackendName, VlmSettings
from services.captioner.prompts import PromptChoice
from services.common.clients import EmbedderClient
from services.common.errors import ServiceError, UnavailableError
from services.common.schemas import ImageFailure, ImageInput

VLM_RETRY_AFTER_SECONDS = 10


class VlmAnswerError(ServiceError):
    """The VLM answered, but not with a caption."""

    def __init__(self, message: str) -> None:
        super().__init__(502, "bad_vlm_answer", message)


class VlmRejectedError(ServiceError):
    """The VLM refused the request (wrong model name, key, or a limit): the setup needs a fix."""

    def __init__(self, message: str) -> None:
        super().__init__(502, "vlm_rejected", message)


@dataclass(frozen=True)
class CaptionTask:
    image: bytes  # location data already removed
    media_type: str
    choice: PromptChoice
    key: str | None = None  # the stored object it came from (stored without location data)


@dataclass(frozen=True)
class BackendAnswer:
    text: str
    model: str


class CaptionBackend(Protocol):
    name: BackendName

    async def caption(self, task: CaptionTask) -> BackendAnswer: ...

    async def ready(self) -> tuple[bool, dict[str, Any]]: ...

    async def close(self) -> None: ...


def chat_request(settings: VlmSettings, task: CaptionTask) -> dict[str, Any]:
    """A chat-completions body: the prompt and the image as a base64 data URL."""
    data_url = f"data:{task.media_type};base64,{base64.b64encode(task.image).decode('ascii')}"
    return {
        **settings.extra_body,
        "model": settings.model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": task.choice.text},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            }
        ],
        "temperature": 0,  # greedy
        "frequency_penalty": 0,  # no repetition penalty
        "presence_penalty": 0,
        "max_tokens": settings.max_tokens,
    }


def caption_from_answer(payload: Any) -> str:
    """`choices[0].message.content`, as a string or as text parts; refuses anything else."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise VlmAnswerError("the VLM's answer has no choices[0].message.content") from None
    if isinstance(content, list):
        content = " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    if not isinstance(content, str) or not content.strip():
        raise VlmAnswerError("the VLM answered with an empty caption")
    return content.strip()


class OpenAICompatibleBackend:
    name = BackendName.OPENAI_COMPATIBLE

    def __init__(self, settings: VlmSettings) -> None:
        self.settings = settings
        headers = {"content-type": "application/json"}
        if settings.api_key is not None and settings.api_key.get_secret_value():
            headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._http = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            timeout=httpx.Timeout(
                settings.timeout_seconds, connect=settings.connect_timeout_seconds
            ),
        )

    def _unavailable(self, why: str) -> UnavailableError:
        return UnavailableError(
            f"the VLM at {self.settings.base_url} {why}",
            retry_after_seconds=VLM_RETRY_AFTER_SECONDS,
        )

    async def caption(self, task: CaptionTask) -> BackendAnswer:
        body = orjson.dumps(chat_request(self.settings, task))
        try:
            response = await self._http.post("chat/completions", content=body)
        except httpx.TimeoutException:
            raise self._unavailable(
                f"did not answer within {self.settings.timeout_seconds:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise self._unavailable(f"is unreachable: {exc}") from exc
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise self._unavailable(f"answered {response.status_code}")
        if response.status_code >= 400:
            raise VlmRejectedError(
                f"the VLM refused the request ({response.status_code}): {response.text[:500]}"
            )
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise VlmAnswerError("the VLM's answer is not JSON") from None
        text = caption_from_answer(payload)
        model = payload.get("model") if isinstance(payload, dict) else None
        return BackendAnswer(text, model if isinstance(model, str) else self.settings.model)

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {"backend": self.name.value, "vlm": self.settings.base_url}
        try:
            response = await self._http.get("models", timeout=5)
        except httpx.HTTPError:
            return False, {**details, "vlm_status": "unreachable"}
        return response.status_code < 500, {**details, "vlm_status": response.status_code}

    async def close(self) -> None:
        await self._http.aclose()


def _label_name(label: str) -> str:
    """ImageNet names list synonyms ("tabby, tabby cat"): the first is the caption's word."""
    return label.split(",")[0].strip()


class OfflineLabelsBackend:
    """A caption from the default encoder's top ImageNet labels and the contributor's place,
    in the asked language's sentences, for `make run` without any VLM. Says what it is."""

    name = BackendName.OFFLINE_LABELS

    def __init__(self, embedder: EmbedderClient, top_k: int, min_score: float) -> None:
        self.embedder = embedder
        self.top_k = top_k
        self.min_score = min_score

    async def caption(self, task: CaptionTask) -> BackendAnswer:
        # a stored image goes to the embedder by key: it reads the same store
        image = ImageInput(key=task.key) if task.key else ImageInput.of_bytes(task.image)
        result = (await self.embedder.embed([image], None, self.top_k))[0]
        if isinstance(result, ImageFailure):
            raise result.as_error(field="image")
        if result.labels is None:
            raise ServiceError(
                503, "no_labels", f"the embedder's model {result.model} gives no labels"
            )
        prompts = task.choice.prompts
        names = list(
            dict.fromkeys(
                _label_name(label.label) for label in result.labels if label.score >= self.min_score
            )
        )
        sentences = [
            prompts.offline.labels.replace("{labels}", prompts.join(names))
            if names
            else prompts.offline.no_labels
        ]
        if task.choice.location:
            sentences.append(prompts.offline.place.replace("{location}", task.choice.location))
        sentences.append(prompts.offline.note)
        return BackendAnswer(" ".join(sentences), f"{self.name.value}/{result.model}")

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        reachable = await self.embedder.readiness()
        return reachable, {
            "backend": self.name.value,
            "embedder": "ready" if reachable else "unreachable",
        }

    async def close(self) -> None:
        await self.embedder.close()
