"""`POST /v1/detect`: faces, licence plates and an unsafe-content score per image."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from services.common.errors import ErrorResponse, ServiceError, UnavailableError
from services.common.images import upright_rgb
from services.common.privacy import DetectedImage, DetectRequest, DetectResponse
from services.common.schemas import ImageFailure
from services.common.service import from_app_state
from services.common.storage import LocalFolderStore, ObjectStore, validate_key
from services.embedder.config import EmbedderSettings
from services.embedder.detection import PrivacyDetectors
from services.embedder.serving import ByteSource, bytes_from_base64, bytes_from_store

router = APIRouter(prefix="/v1", tags=["privacy"])

SettingsDep = Annotated[EmbedderSettings, Depends(from_app_state("settings", EmbedderSettings))]
DetectorsDep = Annotated[PrivacyDetectors, Depends(from_app_state("detectors", PrivacyDetectors))]
StoreDep = Annotated[ObjectStore, Depends(from_app_state("store", LocalFolderStore))]


def _analyse(
    detectors: PrivacyDetectors, index: int, source: ByteSource, settings: EmbedderSettings
) -> DetectedImage | ImageFailure:
    try:
        image = upright_rgb(source(), settings.images, detectors.settings.long_side)
    except UnavailableError:
        raise
    except ServiceError as exc:  # this image alone: unreadable, too large, not stored
        return ImageFailure(index=index, error=exc.body(), status=exc.status_code)
    regions, unsafe = detectors.analyse(image)
    return DetectedImage(
        index=index, regions=regions, unsafe=unsafe, width=image.width, height=image.height
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
) -> DetectResponse:
    """Each image by its bytes (base64) or the key of a stored one; a bad image fails alone."""
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
    executor: ThreadPoolExecutor = request.app.state.detect_pool
    loop = asyncio.get_running_loop()
    # an UnavailableError (the store is down) fails the whole call: the caller retries them all
    results: list[Any] = await asyncio.gather(
        *(
            loop.run_in_executor(executor, _analyse, detectors, i, source, settings)
            for i, source in enumerate(sources)
        )
    )
    return DetectResponse(detectors=detectors.names(), results=results)
