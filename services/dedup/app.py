"""The dedup service: near-duplicates by embedding and by pHash (port 8003)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.common.database import database_reachable, make_engine
from services.common.errors import UnavailableError
from services.common.migrations import wait_for_schema
from services.common.service import (
    Readiness,
    build_service_app,
    single_threaded_blas,
    threads_finished,
)
from services.dedup.api import router
from services.dedup.batch import BatchJobs
from services.dedup.config import DedupSettings
from services.dedup.dedup import Deduplicator
from services.dedup.embedded import EmbeddedVectorStore
from services.dedup.exclusive import claim_database
from services.dedup.tables import DEDUP_SCHEMA
from services.dedup.vectors import QdrantServerStore, VectorStore


def open_vector_store(settings: DedupSettings) -> VectorStore:
    """The Qdrant server when one is configured, else the embedded store in its folder."""
    if settings.qdrant_url is not None:
        return QdrantServerStore(settings)
    return EmbeddedVectorStore(settings)


def create_app(
    settings: DedupSettings | None = None, vector_store: VectorStore | None = None
) -> FastAPI:
    """`vector_store` lets several apps in one process share one embedded store (tests of
    replicas); normally each app opens its own."""
    settings = settings or DedupSettings()
    engine = make_engine(settings.database_url, pool=settings.database_pool)
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        single_threaded_blas()
        await asyncio.to_thread(wait_for_schema, DEDUP_SCHEMA, engine, settings.schema_wait_seconds)
        # the embedded store loads its graphs and refuses a folder another process has open, or
        # a database that another process's embedded store uses
        claim = None
        if vector_store is None and settings.qdrant_url is None:
            claim = await asyncio.to_thread(claim_database, engine, settings.qdrant_path)
        try:
            vectors = (
                vector_store
                if vector_store is not None
                else await asyncio.to_thread(open_vector_store, settings)
            )
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        app.state.deduplicator = Deduplicator(
            settings, engine, vectors, settings.storage.open(), registry
        )
        app.state.jobs = BatchJobs(settings, engine, vectors)
        try:
            yield
        finally:
            await threads_finished()
            if vector_store is None:
                vectors.close()
            if claim is not None:
                claim.release()
            engine.dispose()

    def readiness(app: FastAPI) -> Readiness:
        async def check() -> tuple[bool, dict[str, Any]]:
            details: dict[str, Any] = {
                "vectors": "embedded" if settings.qdrant_url is None else "qdrant server"
            }
            if not await asyncio.to_thread(database_reachable, engine):
                return False, {**details, "database": "unreachable"}
            deduplicator: Deduplicator = app.state.deduplicator
            try:
                await asyncio.to_thread(deduplicator.vectors.collections)
            except UnavailableError:
                return False, {**details, "vectors_status": "unreachable"}
            return True, {**details, "database": engine.dialect.name}

        return check

    return build_service_app(
        "dedup",
        "Near-duplicate lookup and insert-if-unique by embedding and by perceptual hash.",
        router,
        settings,
        registry,
        lifespan,
        readiness,
        max_body_bytes=settings.max_request_bytes,
    )
