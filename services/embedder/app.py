"""The embedder service: images in, vectors out (port 8001)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry

from services.common.service import Readiness, build_service_app, single_threaded_blas
from services.embedder.api import router
from services.embedder.config import EmbedderSettings
from services.embedder.detect_api import router as detect_router
from services.embedder.detection import PrivacyDetectors
from services.embedder.serving import EmbedderMetrics, ModelPool

logger = logging.getLogger(__name__)


def create_app(settings: EmbedderSettings | None = None) -> FastAPI:
    routes = APIRouter()
    routes.include_router(router)
    routes.include_router(detect_router)
    settings = settings or EmbedderSettings()
    registry = CollectorRegistry()
    metrics = EmbedderMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        single_threaded_blas()
        pool = ModelPool(settings, metrics)
        decode_pool = ThreadPoolExecutor(
            settings.runtime.decode_threads, thread_name_prefix="decode"
        )
        detect_pool = ThreadPoolExecutor(settings.detection.threads, thread_name_prefix="detect")
        try:
            app.state.detectors = await asyncio.to_thread(
                PrivacyDetectors.load, settings.detection, settings.models_dir, settings.runtime
            )
            app.state.detect_pool = detect_pool
            default = await pool.load_default()
            app.state.detectors.use_classes_of(default.loaded.labels)
            logger.info(
                "embedder ready: model %s on %s, models %s",
                default.name,
                default.loaded.provider,
                sorted(pool.registered),
            )
            app.state.pool = pool
            app.state.decode_pool = decode_pool
            yield
        finally:
            await pool.stop()
            decode_pool.shutdown(wait=True)
            detect_pool.shutdown(wait=True)

    def readiness(app: FastAPI) -> Readiness:
        async def check() -> tuple[bool, dict[str, Any]]:
            pool: ModelPool | None = getattr(app.state, "pool", None)
            default = pool.serving.get(settings.default_model) if pool else None
            if default is None:
                return False, {"reason": "the default model is not loaded"}
            return True, {"model": default.name, "provider": default.loaded.provider}

        return check

    app = build_service_app(
        "embedder",
        "Turns images into embedding vectors with ONNX Runtime, in micro-batches.",
        routes,
        settings,
        registry,
        lifespan,
        readiness,
        max_body_bytes=settings.max_request_bytes,
    )
    app.state.store = settings.storage.open()
    return app
