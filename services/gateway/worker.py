"""arq workers for the upload pipeline.

Jobs: `process_image` (embed, score, dedup) and `caption_image` (one caption, once processed).

arq services.gateway.worker.WorkerSettings          # run a worker (settings from the env)
arq services.gateway.worker.WorkerSettings --check  # health check: exit 0 when healthy
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import Retry, func
from arq.connections import RedisSettings
from arq.typing import StartupShutdown
from arq.worker import Function, Worker

from services.common.database import create_tables, make_engine
from services.common.errors import UnavailableError
from services.common.logging import configure_logging
from services.gateway.captions import CaptionJob, CaptionJobs
from services.gateway.config import GatewaySettings
from services.gateway.pipeline import ImageGone, Job, Pipeline
from services.gateway.queue import (
    CAPTION_IMAGE,
    PROCESS_IMAGE,
    ArqQueue,
    caption_executor,
    pipeline_batcher,
    retry_delay,
    run_job,
    start_captions,
)
from services.gateway.tables import GATEWAY_TABLES

HEALTH_CHECK_SECONDS = 10


def _on_startup(settings: GatewaySettings) -> StartupShutdown:
    async def startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings.server.log_level)
        engine = make_engine(settings.database_url)
        create_tables(engine, GATEWAY_TABLES)
        ctx["settings"] = settings
        pipeline = await asyncio.to_thread(Pipeline.create, settings, engine)
        ctx["pipeline"] = pipeline
        ctx["batcher"] = pipeline_batcher(pipeline, settings.pipeline)
        ctx["batcher"].start()
        ctx["captions"] = CaptionJobs.create(settings, engine, pipeline.store)
        ctx["caption_executor"] = caption_executor(settings.pipeline)

    return startup


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["batcher"].stop()
    ctx["caption_executor"].shutdown(wait=False, cancel_futures=True)
    ctx["captions"].close()
    pipeline: Pipeline = ctx["pipeline"]
    pipeline.close()
    pipeline.engine.dispose()


async def process_image(ctx: dict[str, Any], image_id: str) -> str:
    """The arq job: the pipeline for one image (batched with the worker's other running jobs),
    retried later while a dependency is down."""
    settings: GatewaySettings = ctx["settings"]
    attempt = int(ctx.get("job_try", 1))
    final = attempt >= settings.pipeline.max_tries
    try:
        outcome = await run_job(ctx["batcher"], Job(image_id, attempt, final))
    except UnavailableError as exc:
        raise Retry(defer=retry_delay(settings.pipeline, attempt)) from exc
    except ImageGone:
        return "gone"
    # after the record is final: a worker killed before this line reruns the job, which
    # finds the image done and queues its captions then
    await start_captions(ArqQueue(ctx["redis"]), ctx["captions"], [image_id])
    return outcome


async def caption_image(ctx: dict[str, Any], image_id: str, language: str, request: int) -> str:
    """The arq job: one caption of a processed image, retried later while the captioner or its
    VLM is unavailable."""
    settings: GatewaySettings = ctx["settings"]
    attempt = int(ctx.get("job_try", 1))
    final = attempt >= settings.pipeline.max_tries
    job = CaptionJob(image_id, language, request)
    try:
        return await asyncio.get_running_loop().run_in_executor(
            ctx["caption_executor"], ctx["captions"].run, job, attempt, final
        )
    except UnavailableError as exc:
        raise Retry(defer=retry_delay(settings.pipeline, attempt)) from exc
    except ImageGone:
        return "gone"


def _functions(settings: GatewaySettings) -> list[Function]:
    return [
        func(
            process_image,
            name=PROCESS_IMAGE,
            max_tries=settings.pipeline.max_tries,
            timeout=settings.pipeline.job_timeout_seconds,
        ),
        func(
            caption_image,
            name=CAPTION_IMAGE,
            max_tries=settings.pipeline.max_tries,
            timeout=settings.pipeline.job_timeout_seconds,
        ),
    ]


def redis_settings(settings: GatewaySettings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url or "redis://127.0.0.1:6379")


def make_worker(settings: GatewaySettings, burst: bool = False) -> Worker:
    """A worker in this process (tests run one in burst mode: until the queue is empty)."""
    return Worker(
        functions=_functions(settings),
        redis_settings=redis_settings(settings),
        on_startup=_on_startup(settings),
        on_shutdown=shutdown,
        max_tries=settings.pipeline.max_tries,
        job_timeout=settings.pipeline.job_timeout_seconds,
        max_jobs=settings.pipeline.batch_size * 2,  # enough running jobs to fill a batch
        health_check_interval=HEALTH_CHECK_SECONDS,
        burst=burst,
        handle_signals=False,
    )


_settings = GatewaySettings()


class WorkerSettings:
    """What the `arq` command reads."""

    functions = _functions(_settings)
    on_startup = _on_startup(_settings)
    on_shutdown = shutdown
    redis_settings = redis_settings(_settings)
    max_tries = _settings.pipeline.max_tries
    job_timeout = _settings.pipeline.job_timeout_seconds
    max_jobs = _settings.pipeline.batch_size * 2
    health_check_interval = HEALTH_CHECK_SECONDS
