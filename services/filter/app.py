"""The filter service: cultural relevance of vectors against reference sets (port 8002)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.common.clients import EmbedderClient
from services.common.database import database_reachable, make_engine
from services.common.migrations import wait_for_schema
from services.common.service import (
    Readiness,
    build_service_app,
    single_threaded_blas,
    threads_finished,
)
from services.filter.api import router
from services.filter.config import FilterSettings
from services.filter.store import ReferenceStore
from services.filter.tables import FILTER_SCHEMA
from services.filter.tiering import tier_defaults


def create_app(settings: FilterSettings | None = None) -> FastAPI:
    settings = settings or FilterSettings()
    engine = make_engine(settings.database_url, pool=settings.database_pool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        single_threaded_blas()
        await asyncio.to_thread(
            wait_for_schema, FILTER_SCHEMA, engine, settings.schema_wait_seconds
        )
        app.state.embedder = EmbedderClient(settings.embedder)
        try:
            yield
        finally:
            await threads_finished()
            await app.state.embedder.close()
            engine.dispose()

    def readiness(_: FastAPI) -> Readiness:
        async def check() -> tuple[bool, dict[str, Any]]:
            if not await asyncio.to_thread(database_reachable, engine):
                return False, {"database": "unreachable"}
            return True, {"database": engine.dialect.name}

        return check

    app = build_service_app(
        "filter",
        "Cultural relevance of image embeddings against reference sets (SEA-VL eq. 1).",
        router,
        settings,
        CollectorRegistry(),
        lifespan,
        readiness,
        max_body_bytes=settings.max_request_bytes,
    )
    app.state.store = ReferenceStore(engine, tier_defaults(settings))
    return app
