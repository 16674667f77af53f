"""Typed HTTP clients for calling one seavl service from another, with timeouts and retries.

A peer that is down or overloaded after the retries becomes `UnavailableError` (503 with
Retry-After for the caller's client); a 4xx from the peer is the caller's input at fault and is
passed on with its own status and code. An answer that is not a seavl answer (a proxy's HTML
page, another app at the URL, a peer of another version) is the peer being unavailable too, and
so is a peer refusing this service's token: the deployment is at fault, not the caller.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, Field, SecretStr, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from services.common.captions import CaptionRequest, CaptionResponse
from services.common.errors import ErrorBody, ErrorResponse, ServiceError, UnavailableError
from services.common.privacy import DetectResponse
from services.common.reference_sets import (
    AddReferencesRequest,
    AddReferencesResponse,
    CalibrationList,
    CalibrationOut,
    CalibrationRequest,
    CreateSetRequest,
    FitTiersRequest,
    ReferenceSetInfo,
    ReferenceSetList,
    TierBoundariesOut,
    TierHistory,
)
from services.common.request_ids import request_id_headers
from services.common.schemas import (
    DedupCheckRequest,
    DedupCheckResponse,
    DedupInsertBatch,
    DedupInsertBatchResponse,
    DedupInsertRequest,
    DedupInsertResponse,
    DroppedCollection,
    EmbeddedImage,
    EmbedResponse,
    ImageFailure,
    ImageInput,
    ScoreResponse,
)

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer", bound=BaseModel)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# Answers that say the peer did not act on the request, so even a write may be sent again.
NOT_APPLIED_STATUS = frozenset({429, 503})
# orjson: embeddings are long float lists, and the stdlib encoder costs the gateway's CPU.
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
JSON_HEADERS = {"content-type": "application/json"}


class ServiceClientSettings(BaseModel):
    url: str
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    attempts: int = Field(default=3, ge=1, description="tries per call, with exponential backoff")
    backoff_seconds: float = Field(
        default=0.1, gt=0, description="the wait after the first failed try, doubled after each"
    )
    max_backoff_seconds: float = Field(
        default=2.0, gt=0, description="the longest wait between two tries"
    )
    token: SecretStr | None = Field(
        default=None,
        description="sent with every call; the service's settings fill it in from "
        "SEAVL_SERVICE_TOKEN",
    )


class _Retryable(Exception):
    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


class ServiceClient:
    """JSON over HTTP to one peer service, async: a call that waits (a VLM takes seconds) holds
    no thread, so slow peers never starve the caller's thread pool."""

    def __init__(self, name: str, settings: ServiceClientSettings) -> None:
        self.name = name
        self.settings = settings
        timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        headers = (
            {"authorization": f"Bearer {settings.token.get_secret_value()}"}
            if settings.token is not None
            else None
        )
        self._http = httpx.AsyncClient(base_url=settings.url, timeout=timeout, headers=headers)

    async def close(self) -> None:
        await self._http.aclose()

    async def _send_once(
        self, method: str, path: str, body: Any, idempotent: bool
    ) -> httpx.Response:
        """One try. A write that is not idempotent is tried again only when the peer surely did
        not apply it: it could not be reached, or it said so (429, 503)."""
        try:
            response = await self._http.request(
                method,
                path,
                content=None if body is None else orjson.dumps(body, option=JSON_OPTIONS),
                # the request id of the call being served, so every service logs it
                headers={**(JSON_HEADERS if body is not None else {}), **request_id_headers()},
            )
        except httpx.TransportError as exc:
            message = f"{self.name} unreachable at {self.settings.url}: {exc}"
            if idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise _Retryable(message) from exc
            raise UnavailableError(f"{message}; it may have applied the request") from exc
        if (
            response.status_code in RETRYABLE_STATUS
            and not _bad_upstream_answer(response)
            and (idempotent or response.status_code in NOT_APPLIED_STATUS)
        ):
            raise _Retryable(f"{self.name} answered {response.status_code}", response)
        return response

    async def request(
        self,
        answer: type[Answer],
        method: str,
        path: str,
        body: Any = None,
        idempotent: bool = True,
    ) -> Answer:
        """The peer's answer read as `answer`, after retrying what may pass (see _send_once)."""
        response = await self._answer(method, path, body, idempotent)
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise self._not_seavl(response) from exc

    async def send(self, method: str, path: str, body: Any = None, idempotent: bool = True) -> None:
        """A call whose success has nothing to read (a 204)."""
        await self._answer(method, path, body, idempotent)

    async def _answer(self, method: str, path: str, body: Any, idempotent: bool) -> httpx.Response:
        """The peer's success, or its failure as the error the caller's client should see."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait_exponential(
                multiplier=self.settings.backoff_seconds, max=self.settings.max_backoff_seconds
            ),
            retry=retry_if_exception_type(_Retryable),
            reraise=False,
        )
        try:
            response: httpx.Response = await retrying(
                self._send_once, method, path, body, idempotent
            )
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise UnavailableError(str(cause)) from cause
        if response.is_success:
            return response
        error = _seavl_error(response)
        if error is None:
            raise self._not_seavl(response)
        if response.status_code == 401:
            logger.error("%s refused this service's call: %s", self.name, error.message)
            raise UnavailableError(
                f"{self.name} refused this service's token ({error.code}): every service, the "
                "gateway and the workers need the same SEAVL_SERVICE_TOKEN"
            )
        if response.status_code >= 500 and response.status_code != 502:
            raise UnavailableError(f"{self.name} failed with {response.status_code}")
        # a 4xx, or a seavl 502 (a verdict on this request, see _bad_upstream_answer)
        raise ServiceError(
            response.status_code,
            error.code,
            error.message,
            field=error.field,
            details=error.details,
        )

    def _not_seavl(self, response: httpx.Response) -> UnavailableError:
        """Nothing in the answer is about the caller's input; the body stays in the log."""
        content_type = response.headers.get("content-type", "no content type")
        logger.warning(
            "%s answered %s (%s) at %s: %r",
            self.name,
            response.status_code,
            content_type,
            response.url,
            response.content[:300],
        )
        return UnavailableError(
            f"{self.name} gave an answer seavl cannot read ({response.status_code}, "
            f"{content_type}): a proxy, another app or another version at its URL?"
        )


def _seavl_error(response: httpx.Response) -> ErrorBody | None:
    """The error a seavl service answers with; None for anything else (a proxy's page)."""
    try:
        return ErrorResponse.model_validate_json(response.content).error
    except ValidationError:
        return None


def _bad_upstream_answer(response: httpx.Response) -> bool:
    """A seavl service's 502 (its own upstream, e.g. a VLM, answered nonsense) is a verdict on
    that request, not an outage to wait out; a proxy's bare 502 is an outage."""
    return response.status_code == 502 and _seavl_error(response) is not None


class EmbedderClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("embedder", settings)

    async def embed(
        self, images: list[ImageInput], model: str | None = None, top_k: int = 0
    ) -> list[EmbeddedImage | ImageFailure]:
        """One result per image, in order (with its `top_k` labels); base64 vectors on the
        wire."""
        payload_images = [image.model_dump(exclude_none=True) for image in images]
        body = {"images": payload_images, "model": model, "encoding": "base64", "top_k": top_k}
        parsed = await self.request(EmbedResponse, "POST", "/v1/embed", body)
        return sorted(parsed.results, key=lambda result: result.index)

    async def detect(self, images: list[ImageInput], embed: bool = False) -> DetectResponse:
        """Faces, plates and an unsafe score per image (`POST /v1/detect`), in order; with
        `embed`, each image's embedding by the default model too (base64 vectors)."""
        body: dict[str, object] = {
            "images": [image.model_dump(exclude_none=True) for image in images]
        }
        if embed:
            body["embed"] = True
        answer = await self.request(DetectResponse, "POST", "/v1/detect", body)
        answer.results.sort(key=lambda result: result.index)
        return answer

    async def readiness(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False


class FilterClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("filter", settings)

    async def score(
        self,
        reference_set: str,
        vectors: list[list[float] | str],
        model: str,
        observe: bool = False,
    ) -> ScoreResponse:
        """`observe`: the scores feed the set's background sketch (a crawl's). A retry after a
        lost answer may count a batch twice, which moves a quantile by nothing that matters."""
        body = {"set": reference_set, "vectors": vectors, "model": model, "observe": observe}
        return await self.request(ScoreResponse, "POST", "/v1/score", body)

    async def list_sets(self) -> ReferenceSetList:
        return await self.request(ReferenceSetList, "GET", "/v1/reference-sets")

    async def get_set(self, name: str) -> ReferenceSetInfo:
        return await self.request(ReferenceSetInfo, "GET", _set_path(name))

    async def create_set(self, request: CreateSetRequest) -> ReferenceSetInfo:
        body = request.model_dump(mode="json", exclude_none=True)
        return await self.request(
            ReferenceSetInfo, "POST", "/v1/reference-sets", body, idempotent=False
        )

    async def delete_set(self, name: str) -> None:
        await self.send("DELETE", _set_path(name), idempotent=False)

    async def add_references(
        self, name: str, request: AddReferencesRequest
    ) -> AddReferencesResponse:
        body = request.model_dump(mode="json", exclude_none=True)
        path = f"{_set_path(name)}/references"
        return await self.request(AddReferencesResponse, "POST", path, body, idempotent=False)

    async def delete_reference(self, name: str, reference_id: int) -> None:
        await self.send("DELETE", f"{_set_path(name)}/references/{reference_id}", idempotent=False)

    async def calibrate(self, name: str, request: CalibrationRequest) -> CalibrationOut:
        body = request.model_dump(mode="json", exclude_none=True)
        path = f"{_set_path(name)}/calibrations"
        return await self.request(CalibrationOut, "POST", path, body, idempotent=False)

    async def list_calibrations(self, name: str) -> CalibrationList:
        return await self.request(CalibrationList, "GET", f"{_set_path(name)}/calibrations")

    async def apply_calibration(self, name: str, calibration_id: int) -> ReferenceSetInfo:
        path = f"{_set_path(name)}/calibrations/{calibration_id}/apply"
        return await self.request(ReferenceSetInfo, "POST", path)

    async def tier_history(self, name: str) -> TierHistory:
        return await self.request(TierHistory, "GET", f"{_set_path(name)}/tiers")

    async def fit_tiers(self, name: str, request: FitTiersRequest) -> TierBoundariesOut:
        body = request.model_dump(mode="json", exclude_none=True)
        path = f"{_set_path(name)}/tiers"
        return await self.request(TierBoundariesOut, "POST", path, body, idempotent=False)


def _set_path(name: str) -> str:
    """A reference set's path on the filter, naming that one set whatever the name: quoted, and
    "." or ".." spelled out, as URLs would otherwise resolve them to another route."""
    quoted = quote(name, safe="")
    if quoted in (".", ".."):
        quoted = quoted.replace(".", "%2E")
    return f"/v1/reference-sets/{quoted}"


class CaptionerClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("captioner", settings)

    async def caption(self, request: CaptionRequest) -> CaptionResponse:
        body = request.model_dump(mode="json", exclude_none=True)
        return await self.request(CaptionResponse, "POST", "/v1/captions", body)


class DedupClient(ServiceClient):
    def __init__(self, settings: ServiceClientSettings) -> None:
        super().__init__("dedup", settings)

    async def check(self, request: DedupCheckRequest) -> DedupCheckResponse:
        body = request.model_dump(exclude_none=True)
        return await self.request(DedupCheckResponse, "POST", "/v1/dedup/check", body)

    async def insert(self, request: DedupInsertRequest) -> DedupInsertResponse:
        body = request.model_dump(exclude_none=True)
        return await self.request(DedupInsertResponse, "POST", "/v1/dedup/insert", body)

    async def insert_batch(self, batch: DedupInsertBatch) -> DedupInsertBatchResponse:
        body = batch.model_dump(exclude_none=True)
        return await self.request(DedupInsertBatchResponse, "POST", "/v1/dedup/insert-batch", body)

    async def drop_collection(self, namespace: str, model: str) -> DroppedCollection | None:
        """Forgets the collection (None if there was none)."""
        path = f"/v1/dedup/collections/{quote(namespace, safe='')}/{quote(model, safe='')}"
        try:
            return await self.request(DroppedCollection, "DELETE", path, idempotent=False)
        except ServiceError as exc:
            if exc.code == "unknown_collection":
                return None
            raise
