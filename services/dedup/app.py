"""The dedup service: near-duplicates by embedding (Qdrant) and by pHash (port 8003)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.common.database import create_tables, database_reachable, make_engine
from services.common.errors import UnavailableError
from services.common.service import Readiness, build_service_app, single_threaded_blas
from services.dedup.api import router
from services.dedup.batch import BatchJobs
from services.dedup.config import DedupSettings
from services.dedup.dedup import Deduplicator
from services.dedup.tables import DEDUP_TABLES
from services.dedup.vectors import VectorStore


def create_app(
    settings: DedupSettings | None = None, vector_store: VectorStore | None = None
) -> FastAPI:
    """`vector_store` lets several apps in one process share a local-mode folder (tests of
    replicas); normally each app opens its own."""
    settings = settings or DedupSettings()
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        single_threaded_blas()
        create_tables(engine, DEDUP_TABLES)
        vectors = vector_store or VectorStore(settings)
        await asyncio.to_thread(vectors.warm_up)
        # Local mode holds every point as Python objects; frozen, the garbage collector stops
        # rescanning them, which would otherwise show up as latency spikes.
        gc.collect()
        gc.freeze()
        app.state.deduplicator = Deduplicator(settings, engine, vectors)
        app.state.jobs = BatchJobs(settings, engine, vectors)
        try:
            yield
        finally:
            if vector_store is None:
                vectors.close()
            engine.dispose()

    def readiness(app: FastAPI) -> Readiness:
        async def check() -> tuple[bool, dict[str, Any]]:
            details: dict[str, Any] = {
                "qdrant": "local" if settings.qdrant_url is None else "server"
            }
            if not await asyncio.to_thread(database_reachable, engine):
                return False, {**details, "database": "unreachable"}
            deduplicator: Deduplicator = app.state.deduplicator
            try:
                await asyncio.to_thread(deduplicator.vectors.collections)
            except UnavailableError:
                return False, {**details, "qdrant_status": "unreachable"}
            return True, {**details, "database": engine.dialect.name}

        return check

    return build_service_app(
        "dedup",
        "Near-duplicate lookup and insert-if-unique by embedding and by perceptual hash.",
        router,
        settings,
        CollectorRegistry(),
        lifespan,
        readiness,
    )
