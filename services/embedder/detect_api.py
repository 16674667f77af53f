"""`POST /v1/detect`: faces, licence plates and an unsafe-content score per image."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from services.common.errors import ErrorResponse, ServiceError, UnavailableError
from services.common.images import scaled_to, upright_rgb
from services.common.privacy import DetectedImage, DetectRequest, DetectResponse
from services.common.schemas import EmbeddedImage, ImageFailure, VectorEncoding
from services.common.service import from_app_state
from services.common.storage import LocalFolderStore, ObjectStore, validate_key
from services.embedder.config import EmbedderSettings
from services.embedder.detection import PrivacyDetectors
from services.embedder.serving import (
    CLIENT_CLOSED_REQUEST,
    ByteSource,
    Encoded,
    ModelPool,
    bytes_from_base64,
    bytes_from_store,
)

router = APIRouter(prefix="/v1", tags=["privacy"])

SettingsDep = Annotated[EmbedderSettings, Depends(from_app_state("settings", EmbedderSettings))]
DetectorsDep = Annotated[PrivacyDetectors, Depends(from_app_state("detectors", PrivacyDetectors))]
StoreDep = Annotated[ObjectStore, Depends(from_app_state("store", LocalFolderStore))]
PoolDep = Annotated[ModelPool, Depends(from_app_state("pool", ModelPool))]


def _analyse(
    detectors: PrivacyDetectors,
    index: int,
    source: ByteSource,
    settings: EmbedderSettings,
    seen: Encoded,
    vehicles: float | None,
) -> DetectedImage | ImageFailure:
    """One image's regions and unsafe score, on the pixels the encoder's decode gave when they
    are big enough for the detectors, else on the image decoded again at their size; the size
    answered is the one looked at, the same whichever decode it came from."""
    long_side = detectors.settings.long_side
    pixels = seen.pixels
    needed = min(long_side, max(seen.facts.width, seen.facts.height))
    try:
        if pixels is None or max(pixels.size) < needed:
            pixels = scaled_to(upright_rgb(source(), settings.images, long_side), long_side)
    except UnavailableError:
        raise
    except ServiceError as exc:  # this image alone: unreadable, too large, not stored
        return ImageFailure(index=index, error=exc.body(), status=exc.status_code)
    regions, unsafe = detectors.analyse(pixels, vehicles)
    return DetectedImage(
        index=index,
        regions=regions,
        unsafe=unsafe,
        width=pixels.width,
        height=pixels.height,
        vehicles=None if vehicles is None else round(vehicles, 4),
    )


@router.post(
    "/detect",
    response_model=DetectResponse,
    summary="Faces, licence plates and an unsafe-content score per image",
    responses={code: {"model": ErrorResponse} for code in (404, 413, 415, 422, 503)},
)
async def detect(
    parsed: DetectRequest,
    request: Request,
    settings: SettingsDep,
    detectors: DetectorsDep,
    store: StoreDep,
    pool: PoolDep,
) -> DetectResponse | Response:
    """Each image by its bytes (base64) or the key of a stored one; a bad image fails alone.

    The default model encodes each image first (its output is kept, so embedding the same bytes
    next on this replica costs nothing; `embed` answers it here, for a caller whose next call
    may reach another replica), and its classes decide whether the image may show a licence
    plate."""
    if len(parsed.images) > settings.max_images_per_request:
        raise ServiceError(
            422,
            "invalid_request",
            f"at most {settings.max_images_per_request} images per request",
            field="images",
        )
    sources: list[ByteSource] = [
        bytes_from_store(store, validate_key(item.key))
        if item.key is not None
        else bytes_from_base64(item.data or "")
        for item in parsed.images
    ]
    serving = await pool.get(None)
    long_side = detectors.settings.long_side
    prepared = await serving.prepare_all(
        sources, settings.images, request.app.state.decode_pool, keep_side=long_side
    )
    # an UnavailableError (the store is down) fails the whole call: the caller retries them all
    for outcome in prepared:
        if isinstance(outcome, UnavailableError):
            raise outcome
    readable = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, ServiceError)]
    encoded = await serving.encode([p for _, p in readable], request)
    if encoded is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    shares = detectors.vehicle_share
    vehicles = [
        None if shares is None or seen.output.logits is None else shares.of(seen.output.logits)
        for seen in encoded
    ]
    executor: ThreadPoolExecutor = request.app.state.detect_pool
    loop = asyncio.get_running_loop()
    results: list[Any] = [
        ImageFailure(index=i, error=p.body(), status=p.status_code)
        for i, p in enumerate(prepared)
        if isinstance(p, ServiceError)
    ]
    results += await asyncio.gather(
        *(
            loop.run_in_executor(
                executor,
                _analyse,
                detectors,
                index,
                sources[index],
                settings,
                seen,
                share,
            )
            for (index, _), seen, share in zip(readable, encoded, vehicles, strict=True)
        )
    )
    if parsed.embed:  # the outputs encoded above, as /v1/embed answers them
        embedded = {
            index: EmbeddedImage.model_validate(serving.answer(index, seen, VectorEncoding.BASE64))
            for (index, _), seen in zip(readable, encoded, strict=True)
        }
        for result in results:
            if isinstance(result, DetectedImage):
                result.embedded = embedded[result.index]
    results.sort(key=lambda result: int(result.index))
    return DetectResponse(detectors=detectors.names(), results=results)
