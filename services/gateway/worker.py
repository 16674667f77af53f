"""arq workers for the upload pipeline.

Four kinds: workers of `process_image` (embed, score, dedup) on arq's default queue, of
`caption_image` (one caption, once its image is processed) on the caption queue, of
`ingest_shard` (one shard of a crawl) on the crawl queue, and of `export_dataset` on the
export queue.
arq's own limits sit above ours (one more try, a margin of time), so that our handling of a try
past its time, and of a last try whose worker stopped during it, always runs: arq alone would
drop those jobs and leave their records unfinished.

A worker waits for Redis when it is away (at start or later) and goes on once it is back,
logging once per outage. The image workers also run the reconciler (an arq cron job).

Every worker, once started, writes a heartbeat file of its own from its event loop
(`worker.heartbeat_file`), which its pod's probe checks: `python -m services.common.worker_alive`.

arq services.gateway.worker.WorkerSettings          # run a worker (settings from the env)
arq services.gateway.worker.WorkerSettings --check  # health check: exit 0 when healthy
arq services.gateway.worker.CaptionWorkerSettings   # a worker of the caption queue
arq services.gateway.worker.CrawlWorkerSettings     # a worker of the crawl queue
arq services.gateway.worker.ExportWorkerSettings    # a worker of the export queue
python -m services.common.worker_alive --queue images     # this process's worker: exit 0 when alive
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, cast

from arq import Retry, cron, func
from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name, retry_key_prefix
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, Worker
from pydantic import ValidationError
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.database import make_engine
from services.common.errors import UnavailableError
from services.common.logging import configure_logging
from services.common.migrations import wait_for_schema
from services.common.request_ids import request_context
from services.common.schemas import EmbeddedImage
from services.common.service import threads_finished
from services.common.worker_alive import heartbeat_path, write_heartbeat
from services.gateway.captions import CaptionJobs
from services.gateway.config import GatewaySettings, PipelineSettings
from services.gateway.crawls import CrawlIngest
from services.gateway.exports import ExportJobs
from services.gateway.jobs import CaptionJob, ImageGone, TryStopped
from services.gateway.pipeline import Pipeline
from services.gateway.queue import (
    CAPTION_IMAGE,
    CAPTION_QUEUE,
    CRAWL_QUEUE,
    EXPORT_DATASET,
    EXPORT_QUEUE,
    INGEST_SHARD,
    PROCESS_IMAGE,
    ArqQueue,
    Attempts,
    CaptionAttempts,
    ExportAttempts,
    ImageAttempts,
    ShardAttempts,
    attempt_in_time,
    export_settings,
    jobs_at_once,
    log_try,
    pipeline_batcher,
    retry_delay,
    shard_settings,
)
from services.gateway.reconciler import Reconciler
from services.gateway.tables import GATEWAY_SCHEMA

logger = logging.getLogger(__name__)
T = TypeVar("T")

HEALTH_CHECK_SECONDS = 10
# arq stops a job this long after our own time limit: room to record the try we stopped
ARQ_TIMEOUT_MARGIN_SECONDS = 5
LAST_TRY_INTERRUPTED = "its last try was interrupted"
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
WAITING_SINCE_PREFIX = "seavl:waiting-since:"
# the longest wait between two attempts to reach Redis while it is away
REDIS_RECONNECT_MAX_SECONDS = 10


class PatientRetry(RedisRetry):
    """Every Redis command of a worker waits for Redis while it is away, however long, instead
    of raising (arq would stop the worker); logs once when the outage starts, once at its end."""

    __slots__ = ("_away",)

    def __init__(self) -> None:
        super().__init__(
            ExponentialBackoff(cap=REDIS_RECONNECT_MAX_SECONDS, base=0.2),
            retries=-1,
            # a refused connection is an OSError until redis-py wraps it
            supported_errors=cast(tuple[type[RedisError], ...], REDIS_AWAY),
        )
        self._away = False

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        async def failed(error: RedisError) -> None:
            if not self._away:
                self._away = True
                logger.warning("Redis is unreachable (%s); waiting for it", error)
            await fail(error)

        result = await super().call_with_retry(do, failed)
        if self._away:
            self._away = False
            logger.warning("Redis is reachable again")
        return result


async def heartbeat(path: Path, queue: str, seconds: float) -> None:
    """Writes `path` every `seconds`, from the worker's event loop: a loop that is blocked or
    stuck stops writing it, which the pod's probe sees (arq's health key, one for every worker
    of a queue, would not tell which). A failed write is logged (once) and tried again."""
    failing = False
    while True:
        try:
            write_heartbeat(path, queue)
        except OSError as exc:
            if not failing:
                logger.warning("cannot write the heartbeat at %s: %s", path, exc)
            failing = True
        else:
            if failing:
                logger.warning("the heartbeat at %s is written again", path)
            failing = False
        await asyncio.sleep(seconds)


def _on_startup(
    settings: GatewaySettings, rules: PipelineSettings, kind: WorkerKind
) -> StartupShutdown:
    async def startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings.server.log_level, service=kind.service)
        # first: the probe passes while the worker waits for its database and sets up
        path = heartbeat_path(kind.value, settings.worker.heartbeat_file)
        ctx["heartbeat_file"] = path
        ctx["heartbeat"] = asyncio.create_task(
            heartbeat(path, kind.value, settings.worker.heartbeat_seconds)
        )
        engine = make_engine(settings.database_url, pool=settings.database_pool)
        await asyncio.to_thread(
            wait_for_schema, GATEWAY_SCHEMA, engine, settings.schema_wait_seconds
        )
        ctx["settings"] = settings
        ctx["rules"] = rules  # the retry rules and time limit of this worker's jobs
        pipeline = await asyncio.to_thread(Pipeline.create, settings, engine)
        ctx["pipeline"] = pipeline
        ctx["batcher"] = pipeline_batcher(pipeline, settings.pipeline)
        ctx["batcher"].start()
        ctx["captions"] = CaptionJobs.create(settings, engine)
        ctx["ingest"] = CrawlIngest(pipeline, ArqQueue(ctx["redis"]))
        ctx["exports"] = ExportJobs(engine, pipeline.store, settings.storage.s3)
        ctx["reconciler"] = Reconciler.create(engine, settings.pipeline)

    return startup


async def _stop_heartbeat(ctx: dict[str, Any]) -> None:
    """No more heartbeats, and no file left behind for a probe to take as a live worker."""
    task: asyncio.Task[None] | None = ctx.pop("heartbeat", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    path: Path | None = ctx.pop("heartbeat_file", None)
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


async def shutdown(ctx: dict[str, Any]) -> None:
    await _stop_heartbeat(ctx)
    await ctx["batcher"].stop()
    await ctx["captions"].close()
    pipeline: Pipeline = ctx["pipeline"]
    await pipeline.close()
    await threads_finished()
    pipeline.engine.dispose()


async def _attempt(
    ctx: dict[str, Any], attempts: Attempts, rules: PipelineSettings | None = None
) -> str:
    """One arq try of a job, retried later while a dependency is down (for the job's retry
    window, a try that does not count) or past its time (a try that counts)."""
    rules = rules or ctx["rules"]
    attempt = int(ctx.get("job_try", 1))
    redis: ArqRedis = ctx["redis"]
    # since when the job has found a dependency down (its retry window runs from there)
    since_key = f"{WAITING_SINCE_PREFIX}{ctx['job_id']}"
    since = await redis.get(since_key)
    waited = 0.0 if since is None else max(0.0, time.time() - float(since))
    try:
        if attempt > rules.max_tries:  # the worker of the last try stopped during it
            status = await attempts.stop(rules.max_tries, True, LAST_TRY_INTERRUPTED)
        else:
            status = await attempt_in_time(rules, attempts, attempt, waited)
    except TryStopped as exc:
        raise Retry(defer=retry_delay(rules, waited)) from exc
    except UnavailableError as exc:
        window = rules.retry_window_seconds
        await redis.set(since_key, str(time.time()), nx=True, ex=int(window) + 3600)
        # arq counts every try; this one does not count against max_tries
        await redis.decr(retry_key_prefix + ctx["job_id"])
        raise Retry(defer=retry_delay(rules, waited)) from exc
    except ImageGone:
        status = "gone"
    await redis.delete(since_key)
    log_try(ctx["job_id"], attempt, status)
    return status


async def reconcile(ctx: dict[str, Any]) -> str:
    """The arq cron job: records whose job was lost are queued again, or failed after their
    last try."""
    reconciler: Reconciler = ctx["reconciler"]
    requeued, failed = await reconciler.reconcile(ArqQueue(ctx["redis"]))
    return f"{requeued} queued again, {failed} failed"


def _every(seconds: float) -> dict[str, set[int]]:
    """arq's cron fields for "every `seconds`" (whole seconds under a minute, else whole
    minutes)."""
    if seconds < 60:
        return {"second": set(range(0, 60, max(1, int(seconds))))}
    return {"minute": set(range(0, 60, max(1, int(seconds // 60)))), "second": {0}}


def _reconcile_cron(settings: GatewaySettings) -> CronJob:
    return cron(
        reconcile,
        name="reconcile",
        run_at_startup=True,
        # as long as a job: arq's lease of a dead worker's job is the longest timeout + 10 s
        timeout=settings.pipeline.job_timeout_seconds + ARQ_TIMEOUT_MARGIN_SECONDS,
        **_every(settings.pipeline.reconcile_interval_seconds),  # type: ignore[arg-type]
    )


def carried_embedding(image_id: str, embedded: str | None) -> EmbeddedImage | None:
    """The embedding a job carries; one this worker cannot read (queued by another version)
    is left aside, and the image is embedded again."""
    if embedded is None:
        return None
    try:
        return EmbeddedImage.model_validate_json(embedded)
    except ValidationError:
        logger.warning("job of %s: its embedding is unreadable here; embedding it again", image_id)
        return None


async def process_image(
    ctx: dict[str, Any],
    image_id: str,
    request_id: str | None = None,
    embedded: str | None = None,
) -> str:
    """The arq job: the pipeline for one image (batched with the worker's other running jobs),
    on behalf of `request_id` (the upload's; none in jobs queued before ids were passed), with
    the image's `embedded` answer (JSON) when the upload's privacy pass gave it.

    The captions waiting for it are queued after its record is final: a worker killed in
    between leaves the job to run again, and it finds the image done and queues them then."""
    queue = ArqQueue(ctx["redis"])
    carried = carried_embedding(image_id, embedded)
    attempts = ImageAttempts(queue, ctx["batcher"], ctx["pipeline"], image_id, carried)
    with request_context(request_id):
        return await _attempt(ctx, attempts)


async def caption_image(
    ctx: dict[str, Any], image_id: str, language: str, request: int, request_id: str | None = None
) -> str:
    """The arq job: one caption of a processed image, on behalf of `request_id`."""
    job = CaptionJob(image_id, language, request)
    with request_context(request_id):
        return await _attempt(ctx, CaptionAttempts(ctx["captions"], job))


async def ingest_shard(
    ctx: dict[str, Any], crawl_id: str, shard: str, request_id: str | None = None
) -> str:
    """The arq job: one shard of a crawl, on behalf of `request_id` (the crawl's request)."""
    with request_context(request_id):
        return await _attempt(ctx, ShardAttempts(ctx["ingest"], crawl_id, shard))


async def export_dataset(ctx: dict[str, Any], export_id: str, request_id: str | None = None) -> str:
    """The arq job: one dataset export."""
    with request_context(request_id):
        return await _attempt(ctx, ExportAttempts(ctx["exports"], export_id))


class WorkerKind(StrEnum):
    """Which queue a worker serves."""

    IMAGES = "images"
    CAPTIONS = "captions"
    CRAWLS = "crawls"
    EXPORTS = "exports"

    @property
    def service(self) -> str:
        """The `service` of its log lines (the image workers' name from before the kinds)."""
        return {
            WorkerKind.IMAGES: "gateway-worker",
            WorkerKind.CAPTIONS: "gateway-caption-worker",
            WorkerKind.CRAWLS: "gateway-crawl-worker",
            WorkerKind.EXPORTS: "gateway-export-worker",
        }[self]


def _job_function(settings: PipelineSettings, coroutine: WorkerCoroutine, name: str) -> Function:
    return func(
        coroutine,
        name=name,
        max_tries=settings.max_tries + 1,
        timeout=settings.job_timeout_seconds + ARQ_TIMEOUT_MARGIN_SECONDS,
    )


def redis_settings(settings: GatewaySettings) -> RedisSettings:
    """Redis for a worker: every command, the first connection included, waits out an outage
    (`PatientRetry`); arq's own connection retries (one log line each) are the fallback."""
    redis = RedisSettings.from_dsn(settings.redis_url or "redis://127.0.0.1:6379")
    redis.conn_retries = 1_000_000
    redis.conn_retry_delay = REDIS_RECONNECT_MAX_SECONDS
    redis.retry = PatientRetry()
    redis.retry_on_error = [RedisConnectionError, RedisTimeoutError]
    return redis


def job_settings(settings: GatewaySettings, kind: WorkerKind) -> PipelineSettings:
    """The retry rules and time limit of a kind's jobs (a shard's limit is its own)."""
    if kind == WorkerKind.CRAWLS:
        return shard_settings(settings.pipeline, settings.crawl)
    if kind == WorkerKind.EXPORTS:
        return export_settings(settings.pipeline, settings.crawl)
    return settings.pipeline


def worker_options(settings: GatewaySettings, kind: WorkerKind) -> dict[str, Any]:
    """A worker's arq options for the queue of `kind`."""
    rules = job_settings(settings, kind)
    kinds: dict[WorkerKind, tuple[WorkerCoroutine, str, str, int]] = {
        WorkerKind.IMAGES: (
            process_image,
            PROCESS_IMAGE,
            default_queue_name,
            jobs_at_once(settings.pipeline, captions=False),
        ),
        WorkerKind.CAPTIONS: (
            caption_image,
            CAPTION_IMAGE,
            CAPTION_QUEUE,
            jobs_at_once(settings.pipeline, captions=True),
        ),
        WorkerKind.CRAWLS: (ingest_shard, INGEST_SHARD, CRAWL_QUEUE, settings.crawl.shards_at_once),
        WorkerKind.EXPORTS: (export_dataset, EXPORT_DATASET, EXPORT_QUEUE, 1),
    }
    function, name, queue, at_once = kinds[kind]
    return {
        "functions": [_job_function(rules, function, name)],
        "queue_name": queue,
        "cron_jobs": [_reconcile_cron(settings)] if kind == WorkerKind.IMAGES else [],
        "redis_settings": redis_settings(settings),
        "on_startup": _on_startup(settings, rules, kind),
        "on_shutdown": shutdown,
        "max_jobs": at_once,
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def make_worker(
    settings: GatewaySettings, burst: bool = False, kind: WorkerKind = WorkerKind.IMAGES
) -> Worker:
    """A worker in this process of the queue of `kind` (tests run them in burst mode: until
    their queue is empty)."""
    return Worker(**worker_options(settings, kind), burst=burst, handle_signals=False)


_settings = GatewaySettings()
# What the `arq` command reads (a dict serves as well as a class, and a class would not
# inherit: arq reads only its own __dict__).
WorkerSettings = worker_options(_settings, WorkerKind.IMAGES)
CaptionWorkerSettings = worker_options(_settings, WorkerKind.CAPTIONS)
CrawlWorkerSettings = worker_options(_settings, WorkerKind.CRAWLS)
ExportWorkerSettings = worker_options(_settings, WorkerKind.EXPORTS)
