"""arq workers for the upload pipeline.

Two kinds: workers of `process_image` (embed, score, dedup) on arq's default queue, and
workers of `caption_image` (one caption, once its image is processed) on the caption queue.
arq's own limits sit above ours (one more try, a margin of time), so that our handling of a try
past its time, and of a last try whose worker stopped during it, always runs: arq alone would
drop those jobs and leave their records unfinished.

arq services.gateway.worker.WorkerSettings          # run a worker (settings from the env)
arq services.gateway.worker.WorkerSettings --check  # health check: exit 0 when healthy
arq services.gateway.worker.CaptionWorkerSettings   # a worker of the caption queue
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import Retry, func
from arq.connections import RedisSettings
from arq.constants import default_queue_name
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, Worker

from services.common.database import create_tables, make_engine
from services.common.errors import UnavailableError
from services.common.logging import configure_logging
from services.gateway.captions import CaptionJobs
from services.gateway.config import GatewaySettings
from services.gateway.jobs import CaptionJob, ImageGone
from services.gateway.pipeline import Pipeline
from services.gateway.queue import (
    CAPTION_IMAGE,
    CAPTION_QUEUE,
    PROCESS_IMAGE,
    ArqQueue,
    Attempts,
    CaptionAttempts,
    ImageAttempts,
    attempt_in_time,
    caption_executor,
    finish_threads,
    jobs_at_once,
    pipeline_batcher,
    pipeline_executor,
    retry_delay,
)
from services.gateway.tables import GATEWAY_TABLES

HEALTH_CHECK_SECONDS = 10
# arq stops a job this long after our own time limit: room to record the try we stopped
ARQ_TIMEOUT_MARGIN_SECONDS = 5
LAST_TRY_INTERRUPTED = "its last try was interrupted"


def _on_startup(settings: GatewaySettings) -> StartupShutdown:
    async def startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings.server.log_level)
        engine = make_engine(settings.database_url)
        create_tables(engine, GATEWAY_TABLES)
        ctx["settings"] = settings
        pipeline = await asyncio.to_thread(Pipeline.create, settings, engine)
        ctx["pipeline"] = pipeline
        ctx["pipeline_executor"] = pipeline_executor(settings.pipeline)
        ctx["batcher"] = pipeline_batcher(pipeline, settings.pipeline, ctx["pipeline_executor"])
        ctx["batcher"].start()
        ctx["captions"] = CaptionJobs.create(settings, engine, pipeline.store)
        ctx["caption_executor"] = caption_executor(settings.pipeline)

    return startup


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["batcher"].stop()
    await finish_threads(ctx["pipeline_executor"], ctx["caption_executor"])
    ctx["captions"].close()
    pipeline: Pipeline = ctx["pipeline"]
    pipeline.close()
    pipeline.engine.dispose()


async def _attempt(ctx: dict[str, Any], attempts: Attempts) -> str:
    """One arq try of a job, retried later while a dependency is down or past its time."""
    settings: GatewaySettings = ctx["settings"]
    attempt = int(ctx.get("job_try", 1))
    try:
        if attempt > settings.pipeline.max_tries:  # the worker of the last try stopped during it
            return await attempts.stop(settings.pipeline.max_tries, True, LAST_TRY_INTERRUPTED)
        return await attempt_in_time(settings.pipeline, attempts, attempt)
    except UnavailableError as exc:
        raise Retry(defer=retry_delay(settings.pipeline, attempt)) from exc
    except ImageGone:
        return "gone"


async def process_image(ctx: dict[str, Any], image_id: str) -> str:
    """The arq job: the pipeline for one image (batched with the worker's other running jobs).

    The captions waiting for it are queued after its record is final: a worker killed in
    between leaves the job to run again, and it finds the image done and queues them then."""
    queue = ArqQueue(ctx["redis"])
    return await _attempt(ctx, ImageAttempts(queue, ctx["batcher"], ctx["pipeline"], image_id))


async def caption_image(ctx: dict[str, Any], image_id: str, language: str, request: int) -> str:
    """The arq job: one caption of a processed image."""
    job = CaptionJob(image_id, language, request)
    return await _attempt(ctx, CaptionAttempts(ctx["caption_executor"], ctx["captions"], job))


def _job_function(settings: GatewaySettings, coroutine: WorkerCoroutine, name: str) -> Function:
    return func(
        coroutine,
        name=name,
        max_tries=settings.pipeline.max_tries + 1,
        timeout=settings.pipeline.job_timeout_seconds + ARQ_TIMEOUT_MARGIN_SECONDS,
    )


def redis_settings(settings: GatewaySettings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url or "redis://127.0.0.1:6379")


def worker_options(settings: GatewaySettings, captions: bool) -> dict[str, Any]:
    """A worker's arq options: of the image pipeline, or of the caption queue."""
    return {
        "functions": [
            _job_function(settings, caption_image, CAPTION_IMAGE)
            if captions
            else _job_function(settings, process_image, PROCESS_IMAGE)
        ],
        "queue_name": CAPTION_QUEUE if captions else default_queue_name,
        "redis_settings": redis_settings(settings),
        "on_startup": _on_startup(settings),
        "on_shutdown": shutdown,
        "max_jobs": jobs_at_once(settings.pipeline, captions),
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def make_worker(settings: GatewaySettings, burst: bool = False, captions: bool = False) -> Worker:
    """A worker in this process, of images or of captions (tests run them in burst mode:
    until their queue is empty)."""
    return Worker(**worker_options(settings, captions), burst=burst, handle_signals=False)


_settings = GatewaySettings()
# What the `arq` command reads (a dict serves as well as a class, and a class would not
# inherit: arq reads only its own __dict__).
WorkerSettings = worker_options(_settings, captions=False)
CaptionWorkerSettings = worker_options(_settings, captions=True)
