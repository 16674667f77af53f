"""Typed HTTP clients for calling one seavl service from another, with timeouts and retries.

A peer that is down or overloaded after the retries becomes `UnavailableError` (503 with
Retry-After for the caller's client); a 4xx from the peer is the caller's input at fault and is
passed on with its own status and code.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, Field
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from services.common.captions import CaptionRequest, CaptionResponse
from services.common.errors import ServiceError, UnavailableError
from services.common.schemas import (
    DedupCheckRequest,
    DedupCheckResponse,
    DedupInsertBatch,
    DedupInsertBatchResponse,
    DedupInsertRequest,
    DedupInsertResponse,
    EmbeddedImage,
    EmbedResponse,
    ImageFailure,
    ScoreResponse,
)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# orjson: embeddings are long float lists, and the stdlib encoder costs the gateway's CPU.
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
JSON_HEADERS = {"content-type": "application/json"}


class ServiceClientSettings(BaseModel):
    url: str
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    attempts: int = Field(default=3, ge=1, description="tries per call, with exponential backoff")


class _Retryable(Exception):
    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


class ServiceClient:
    """JSON over HTTP to one peer service."""

    def __init__(self, name: str, settings: ServiceClientSettings) -> None:
        self.name = name
        self.settings = settings
        timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        self._http = httpx.Client(base_url=settings.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _send_once(self, method: str, path: str, body: Any) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                path,
                content=None if body is None else orjson.dumps(body, option=JSON_OPTIONS),
                headers=JSON_HEADERS if body is not None else None,
            )
        except httpx.TransportError as exc:
            raise _Retryable(f"{self.name} unreachable at {self.settings.url}: {exc}") from exc
        if response.status_code in RETRYABLE_STATUS and not _bad_upstream_answer(response):
            raise _Retryable(f"{self.name} answered {response.status_code}", response)
        return response

    def request(self, method: str, path: str, body: Any = None) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            retry=retry_if_exception_type(_Retryable),
            reraise=False,
        )
        try:
            response = retrying(self._send_once, method, path, body)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise UnavailableError(str(cause)) from cause
        if response.status_code == 502:  # only a seavl verdict gets here (see _send_once)
            raise _peer_error(response)
        if response.status_code >= 500:
            raise UnavailableError(f"{self.name} failed with {response.status_code}")
        if response.status_code >= 400:
            raise _peer_error(response)
        return orjson.loads(response.content)


def _bad_upstream_answer(response: httpx.Response) -> bool:
    """A seavl service's 502 (its own upstream, e.g. a VLM, answered nonsense) is a verdict on
    that request, not an outage to wait out; a proxy's bare 502 is an outage."""
    if response.status_code != 502:
        return False
    try:
        return isinstance(orjson.loads(response.content)["error"]["code"], str)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False


def _peer_error(response: httpx.Response) -> ServiceError:
    try:
        error = response.json()["error"]
        return ServiceError(
            response.status_code,
            str(error["code"]),
            str(error["message"]),
            field=error.get("field"),
        )
    except (ValueError, KeyError, TypeError):
        return ServiceError(response.status_code, "peer_error", response.text[:500])


class ImageReference(BaseModel):
    """Bytes the caller holds, or the key of an object already in the store."""

    data: bytes | None = None
    key: str | None = None


class EmbedderClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("embedder", settings)

    def embed(
        self, images: list[ImageReference], model: str | None = None, top_k: int = 0
    ) -> list[EmbeddedImage | ImageFailure]:
        """One result per image, in order (with its `top_k` labels); base64 vectors on the
        wire."""
        payload_images = [
            {"key": image.key}
            if image.key is not None
            else {"data": base64.b64encode(image.data or b"").decode("ascii")}
            for image in images
        ]
        body = {"images": payload_images, "model": model, "encoding": "base64", "top_k": top_k}
        parsed = EmbedResponse.model_validate(self.request("POST", "/v1/embed", body))
        return sorted(parsed.results, key=lambda result: result.index)

    def readiness(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False


class FilterClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("filter", settings)

    def score(
        self, reference_set: str, vectors: list[list[float] | str], model: str
    ) -> ScoreResponse:
        body = {"set": reference_set, "vectors": vectors, "model": model}
        return ScoreResponse.model_validate(self.request("POST", "/v1/score", body))


class CaptionerClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("captioner", settings)

    def caption(self, request: CaptionRequest) -> CaptionResponse:
        body = request.model_dump(mode="json", exclude_none=True)
        return CaptionResponse.model_validate(self.request("POST", "/v1/captions", body))


class DedupClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("dedup", settings)

    def check(self, request: DedupCheckRequest) -> DedupCheckResponse:
        body = request.model_dump(exclude_none=True)
        return DedupCheckResponse.model_validate(self.request("POST", "/v1/dedup/check", body))

    def insert(self, request: DedupInsertRequest) -> DedupInsertResponse:
        body = request.model_dump(exclude_none=True)
        return DedupInsertResponse.model_validate(self.request("POST", "/v1/dedup/insert", body))

    def insert_batch(self, batch: DedupInsertBatch) -> DedupInsertBatchResponse:
        body = batch.model_dump(exclude_none=True)
        return DedupInsertBatchResponse.model_validate(
            self.request("POST", "/v1/dedup/insert-batch", body)
        )
