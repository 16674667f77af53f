"""The filter service: cultural relevance of vectors against reference sets (port 8002)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.common.clients import EmbedderClient
from services.common.database import create_tables, database_reachable, make_engine
from services.common.errors import install_error_handlers
from services.common.http import HttpMetrics, MetricsMiddleware, add_probe_routes
from services.filter.api import router
from services.filter.config import FilterSettings
from services.filter.store import ReferenceStore
from services.filter.tables import FILTER_TABLES


def create_app(settings: FilterSettings | None = None) -> FastAPI:
    settings = settings or FilterSettings()
    registry = CollectorRegistry()
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        create_tables(engine, FILTER_TABLES)
        app.state.embedder = EmbedderClient(settings.embedder)
        try:
            yield
        finally:
            app.state.embedder.close()
            engine.dispose()

    app = FastAPI(
        title="seavl filter",
        version="0.1.0",
        summary="Cultural relevance of image embeddings against reference sets (SEA-VL eq. 1).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = ReferenceStore(engine)
    install_error_handlers(app)
    app.include_router(router)

    async def readiness() -> tuple[bool, dict[str, Any]]:
        reachable = await asyncio.to_thread(database_reachable, engine)
        if not reachable:
            return False, {"database": "unreachable"}
        return True, {"database": engine.dialect.name}

    add_probe_routes(app, registry, readiness)
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics("filter", registry))
    return app
