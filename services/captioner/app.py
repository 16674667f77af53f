"""The captioner: culturally aware captions from a VLM, or offline from labels (port 8004)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.captioner.api import router
from services.captioner.backends import (
    CaptionBackend,
    OfflineLabelsBackend,
    OpenAICompatibleBackend,
)
from services.captioner.captioning import Captioner, CaptionMetrics
from services.captioner.config import BackendName, CaptionerSettings
from services.captioner.language import LanguageCheck
from services.captioner.prompts import PromptBook
from services.common.clients import EmbedderClient
from services.common.service import Readiness, build_service_app

# A base64 image is 4/3 of its bytes; the rest of the JSON is small.
REQUEST_ALLOWANCE_BYTES = 64 * 1024


def make_backend(settings: CaptionerSettings) -> CaptionBackend:
    if settings.backend is BackendName.OPENAI_COMPATIBLE:
        return OpenAICompatibleBackend(settings.vlm)
    return OfflineLabelsBackend(
        EmbedderClient(settings.embedder), settings.offline_top_k, settings.offline_min_score
    )


def create_app(settings: CaptionerSettings | None = None) -> FastAPI:
    settings = settings or CaptionerSettings()
    prompts = PromptBook()  # bad prompt files fail here, before the server starts
    registry = CollectorRegistry()
    metrics = CaptionMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = make_backend(settings)
        app.state.captioner = Captioner(
            backend=backend,
            prompts=prompts,
            language_check=LanguageCheck(settings.language_check),
            store=settings.storage.open(),
            limits=settings.images,
            timeout_seconds=settings.request_timeout_seconds,
            metrics=metrics,
        )
        try:
            yield
        finally:
            await backend.close()

    def readiness(app: FastAPI) -> Readiness:
        async def check() -> tuple[bool, dict[str, Any]]:
            captioner: Captioner = app.state.captioner
            return await captioner.backend.ready()

        return check

    app = build_service_app(
        "captioner",
        "Culturally aware captions of SEA images, from a VLM or offline from image labels.",
        router,
        settings,
        registry,
        lifespan,
        readiness,
        max_body_bytes=settings.images.max_bytes * 4 // 3 + REQUEST_ALLOWANCE_BYTES,
    )
    app.state.prompts = prompts
    return app
