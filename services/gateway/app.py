"""The gateway: the public API (port 8000); storage, records, and the upload pipeline's queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.common.database import database_reachable, make_engine
from services.common.migrations import wait_for_schema
from services.common.openapi import document_page_limit
from services.common.service import (
    Readiness,
    build_service_app,
    single_threaded_blas,
    threads_finished,
)
from services.gateway import crawl_records, export_records, records
from services.gateway.auth import ApiKeys
from services.gateway.captions import CaptionJobs
from services.gateway.config import GatewaySettings
from services.gateway.pipeline import Pipeline
from services.gateway.points_rules import PointTable
from services.gateway.queue import ArqQueue, InProcessQueue, JobQueue
from services.gateway.routes import public_routes
from services.gateway.tables import GATEWAY_SCHEMA


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    engine = make_engine(settings.database_url, pool=settings.database_pool)
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        single_threaded_blas()
        await asyncio.to_thread(
            wait_for_schema, GATEWAY_SCHEMA, engine, settings.schema_wait_seconds
        )
        pipeline = await asyncio.to_thread(Pipeline.create, settings, engine)
        captions = CaptionJobs.create(settings, engine)
        queue: JobQueue
        if settings.redis_url is None:
            queue = InProcessQueue(pipeline, captions, settings.pipeline, registry)
        else:
            queue = await ArqQueue.connect(settings.redis_url)
        app.state.store = pipeline.store
        app.state.embedder, app.state.filter, app.state.dedup = (
            pipeline.embedder,
            pipeline.filter,
            pipeline.dedup,
        )
        app.state.queue = queue
        app.state.captions = captions
        if settings.redis_url is None:
            # in-process jobs die with the process: the ones it left unfinished start again
            for image_id in await asyncio.to_thread(records.unfinished_images, engine):
                await queue.enqueue(image_id)
            for job in await asyncio.to_thread(records.pending_captions, engine):
                await queue.enqueue_caption(job)
            for crawl_id, shard in await asyncio.to_thread(crawl_records.unfinished_shards, engine):
                await queue.enqueue_shard(crawl_id, shard)
            for export_id in await asyncio.to_thread(export_records.unfinished_exports, engine):
                await queue.enqueue_export(export_id)
        try:
            yield
        finally:
            await queue.close()
            await threads_finished()
            await pipeline.close()
            await captions.close()
            engine.dispose()

    def readiness(app: FastAPI) -> Readiness:
        async def check() -> tuple[bool, dict[str, Any]]:
            details = {
                "queue": "arq" if settings.redis_url else "in-process",
                "storage": "s3" if settings.storage.s3 else "folder",
            }
            if not await asyncio.to_thread(database_reachable, engine):
                return False, {**details, "database": "unreachable"}
            return True, {**details, "database": engine.dialect.name}

        return check

    app = build_service_app(
        "gateway",
        "The public API of seavl: uploads, their relevance and duplicates, and the pipeline.",
        public_routes(),
        settings,
        registry,
        lifespan,
        readiness,
        max_body_bytes=settings.images.max_bytes + settings.metadata_allowance_bytes,
        public=True,
    )
    document_page_limit(app, settings.max_page_size)
    app.state.engine = engine
    app.state.keys = ApiKeys(engine, settings.key_remember_seconds)
    app.state.points = PointTable.load(settings.people.points_phase)  # a bad table stops start-up
    return app
