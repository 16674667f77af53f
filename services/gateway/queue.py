"""Where jobs go: arq on Redis when `REDIS_URL` is set, the gateway's own process if not.

Both run the same job code (`Pipeline.process_batch`, `CaptionJobs.run`) and retry it, with a
doubling delay (capped), while a dependency is down: for `retry_window_seconds` from the first
try that found it down, without counting tries, so an outage of minutes fails nothing; then
the record ends failed with the reason. A try that runs past `job_timeout_seconds` is stopped
and retried the same way, but counts: past `max_tries`, the record ends failed with the reason.
A reconciler (`services.gateway.reconciler`) runs every `reconcile_interval_seconds` and
queues again the records whose job was lost.
A processing job is keyed by the image's sha256, so enqueueing the same image twice runs it
once; a caption job by image, language and request. When an image's processing ends, the
captions asked for it are queued.
A job carries the request id of the request that queued it (an extra argument, so keys stay
as they are), and its tries run with it: their log lines and calls carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from services.common.batching import MicroBatcher
from services.common.errors import UnavailableError
from services.common.request_ids import current_request_id, new_request_id, request_context
from services.common.schemas import EmbeddedImage
from services.gateway.captions import CaptionJobs
from services.gateway.config import CrawlSettings, PipelineSettings
from services.gateway.crawls import CrawlIngest, shard_job_id
from services.gateway.exports import ExportJobs, export_job_id
from services.gateway.jobs import (
    CaptionJob,
    ImageGone,
    Job,
    JobOutcome,
    TryStopped,
    image_job_id,
)
from services.gateway.pipeline import Pipeline
from services.gateway.reconciler import Reconciler

logger = logging.getLogger(__name__)

PROCESS_IMAGE = "process_image"
CAPTION_IMAGE = "caption_image"
# Captions wait seconds on a VLM each: their own queue and workers, so that a thousand queued
# captions never hold up the processing of new uploads.
CAPTION_QUEUE = "arq:captions"
INGEST_SHARD = "ingest_shard"
EXPORT_DATASET = "export_dataset"
# An export writes a whole dataset for hours: its own queue and worker, since arq leases every
# job of a worker for the longest time limit of the worker's functions (a killed crawl worker's
# shards would otherwise wait hours to run again).
EXPORT_QUEUE = "arq:exports"
# Shards take minutes each and decode thousands of images: their own queue and workers, scaled
# on its length, so a crawl never holds up uploads.
CRAWL_QUEUE = "arq:crawls"
PipelineBatcher = MicroBatcher[Job, JobOutcome]


def retry_delay(settings: PipelineSettings, waited: float) -> float:
    """The wait before the next try of a job that has waited `waited` seconds on a dependency:
    `retry_delay_seconds` more than that (the wait doubles with each retry), up to
    `retry_delay_max_seconds`; none when `retry_delay_seconds` is 0."""
    if settings.retry_delay_seconds == 0:
        return 0.0
    return min(settings.retry_delay_seconds + waited, settings.retry_delay_max_seconds)


def window_over(settings: PipelineSettings, waited: float) -> bool:
    """Whether a job that has waited `waited` seconds would retry past its retry window."""
    return waited + retry_delay(settings, waited) > settings.retry_window_seconds


class JobQueue(Protocol):
    async def enqueue(self, image_id: str, embedded: EmbeddedImage | None = None) -> None:
        """The image's processing; `embedded`: its embedding, known already (the job carries
        it, so that no embedder encodes the image again)."""
        ...

    async def enqueue_caption(self, job: CaptionJob) -> None: ...

    async def enqueue_shard(self, crawl_id: str, shard: str) -> None: ...

    async def enqueue_export(self, export_id: str) -> None: ...

    async def job_gone(self, key: str) -> bool:
        """Whether no job of this key is queued or running (the reconciler's question)."""
        ...

    async def close(self) -> None: ...


class ArqQueue:
    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, redis_url: str) -> ArqQueue:
        settings = RedisSettings.from_dsn(redis_url)
        settings.conn_timeout = 2
        settings.conn_retries = 1
        return cls(await create_pool(settings))

    async def _enqueue(self, function: str, *args: object, **options: Any) -> None:
        try:
            await self.pool.enqueue_job(function, *args, request_id=current_request_id(), **options)
        except (RedisError, OSError) as exc:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {exc}") from exc

    async def enqueue(self, image_id: str, embedded: EmbeddedImage | None = None) -> None:
        carried = {} if embedded is None else {"embedded": embedded.model_dump_json()}
        await self._enqueue(PROCESS_IMAGE, image_id, _job_id=image_job_id(image_id), **carried)

    async def enqueue_caption(self, job: CaptionJob) -> None:
        await self._enqueue(
            CAPTION_IMAGE,
            job.image_id,
            job.language,
            job.request,
            _job_id=job.job_id,
            _queue_name=CAPTION_QUEUE,
        )

    async def enqueue_shard(self, crawl_id: str, shard: str) -> None:
        await self._enqueue(
            INGEST_SHARD,
            crawl_id,
            shard,
            _job_id=shard_job_id(crawl_id, shard),
            _queue_name=CRAWL_QUEUE,
        )

    async def enqueue_export(self, export_id: str) -> None:
        await self._enqueue(
            EXPORT_DATASET, export_id, _job_id=export_job_id(export_id), _queue_name=EXPORT_QUEUE
        )

    async def job_gone(self, key: str) -> bool:
        """No job of `key` queued, deferred or running. The result a finished job left is
        forgotten, so that enqueueing `key` again runs it (arq keeps results for an hour)."""
        if await self.pool.exists(job_key_prefix + key, in_progress_key_prefix + key):
            return False
        await self.pool.delete(result_key_prefix + key)
        return True

    async def close(self) -> None:
        await self.pool.aclose()


def jobs_at_once(settings: PipelineSettings, captions: bool) -> int:
    """Tries one process runs at once (a try's time limit runs from its turn): of images,
    enough to fill a batch; of captions, as many as may wait on a VLM."""
    return settings.caption_concurrency if captions else settings.batch_size * 2


def in_request_context(
    process_batch: Callable[[Sequence[Job]], Awaitable[list[JobOutcome]]],
) -> Callable[[Sequence[Job]], Awaitable[list[JobOutcome]]]:
    """`process_batch` run with the request id of its jobs when they share one, else with one
    of its own, logged with theirs so that each job's lines lead to the batch's."""

    async def run(jobs: Sequence[Job]) -> list[JobOutcome]:
        request_ids = {job.request_id for job in jobs}
        shared = len(request_ids) == 1
        with request_context(request_ids.pop() if shared else new_request_id()):
            if not shared:
                given = ", ".join(sorted(r for r in request_ids if r is not None))
                logger.info("a batch of %d jobs, of the requests %s", len(jobs), given)
            return await process_batch(jobs)

    return run


def pipeline_batcher(pipeline: Pipeline, settings: PipelineSettings) -> PipelineBatcher:
    """Groups the jobs running at the same time into `Pipeline.process_batch` calls."""
    return MicroBatcher(
        in_request_context(pipeline.process_batch),
        None,  # a coroutine: it waits on the services, not on threads
        max_batch_size=settings.batch_size,
        max_wait_seconds=settings.batch_wait_ms / 1000,
        max_queue=1_000_000,  # bounded by the jobs in flight, which the callers bound
        max_concurrent_batches=settings.concurrent_batches,
    )


class Attempts(Protocol):
    """One job's tries, for the queues: `run` one, or `stop` one from outside (its SQL, in a
    thread, may run on). Each returns the job's status, or raises `UnavailableError` to be
    retried later (or `ImageGone`: nothing to do)."""

    def run(self, attempt: int, final: bool) -> Awaitable[str]: ...

    def stop(self, attempt: int, final: bool, reason: str) -> Awaitable[str]: ...


@dataclass(frozen=True)
class ImageAttempts:
    """Tries of an image's processing: through the batcher, then the captions waiting for the
    image onto `queue`."""

    queue: JobQueue
    batcher: PipelineBatcher
    pipeline: Pipeline
    image_id: str
    embedded: EmbeddedImage | None = None

    async def run(self, attempt: int, final: bool) -> str:
        job = Job(self.image_id, attempt, final, current_request_id(), self.embedded)
        return await self._settle(await self.batcher.submit_many([job])[0])

    async def stop(self, attempt: int, final: bool, reason: str) -> str:
        job = Job(self.image_id, attempt, final, current_request_id())
        return await self._settle(await asyncio.to_thread(self.pipeline.stop, job, reason))

    async def _settle(self, outcome: JobOutcome) -> str:
        if isinstance(outcome, Exception):
            raise outcome
        for caption in outcome.captions:
            await self.queue.enqueue_caption(caption)
        return outcome.status


@dataclass(frozen=True)
class CaptionAttempts:
    """Tries of a caption job: the captioner is awaited, a wait that holds no thread."""

    captions: CaptionJobs
    job: CaptionJob

    def run(self, attempt: int, final: bool) -> Awaitable[str]:
        return self.captions.run(self.job, attempt, final)

    def stop(self, attempt: int, final: bool, reason: str) -> Awaitable[str]:
        return asyncio.to_thread(self.captions.stop, self.job, attempt, final, reason)


@dataclass(frozen=True)
class ShardAttempts:
    """Tries of a crawl shard's ingest."""

    ingest: CrawlIngest
    crawl_id: str
    shard: str

    def run(self, attempt: int, final: bool) -> Awaitable[str]:
        return self.ingest.run_shard(self.crawl_id, self.shard, attempt)

    def stop(self, attempt: int, final: bool, reason: str) -> Awaitable[str]:
        return asyncio.to_thread(self.ingest.stop, self.crawl_id, self.shard, final, reason)


@dataclass(frozen=True)
class ExportAttempts:
    """Tries of a dataset export."""

    exports: ExportJobs
    export_id: str

    def run(self, attempt: int, final: bool) -> Awaitable[str]:
        return self.exports.run(self.export_id, attempt, final)

    def stop(self, attempt: int, final: bool, reason: str) -> Awaitable[str]:
        return asyncio.to_thread(self.exports.stop, self.export_id, final, reason)


def shard_settings(settings: PipelineSettings, crawl: CrawlSettings) -> PipelineSettings:
    """The retry rules of jobs, with a shard's longer time limit."""
    return settings.model_copy(update={"job_timeout_seconds": crawl.shard_timeout_seconds})


def export_settings(settings: PipelineSettings, crawl: CrawlSettings) -> PipelineSettings:
    """The retry rules of jobs, with an export's time limit."""
    return settings.model_copy(update={"job_timeout_seconds": crawl.export_timeout_seconds})


async def attempt_in_time(
    settings: PipelineSettings, attempts: Attempts, attempt: int, waited: float
) -> str:
    """One try, stopped after `job_timeout_seconds`: then `TryStopped` (retried, and counted),
    or after the last try recorded as failed ("timed out after N s"). A dependency found down
    raises `UnavailableError` (retried, not counted) until the job has waited `waited` seconds
    too long: then the record fails with the reason."""
    run = attempts.run(attempt, window_over(settings, waited))
    try:
        return await asyncio.wait_for(run, settings.job_timeout_seconds)
    except TimeoutError:
        reason = f"timed out after {settings.job_timeout_seconds} s"
        try:
            return await attempts.stop(attempt, attempt >= settings.max_tries, reason)
        except UnavailableError as exc:
            raise TryStopped(reason) from exc


def log_try(key: str, attempt: int, status: str) -> None:
    logger.info("job %s, try %d: %s", key, attempt, status)


class InProcessQueue:
    """Jobs as asyncio tasks of this process (embedded mode), batched as arq workers batch.

    A job's task runs in a copy of the context that queued it, with its request id: the
    upload's, the image job's (for the captions it queues) or the reconciler round's."""

    def __init__(
        self,
        pipeline: Pipeline,
        captions: CaptionJobs,
        settings: PipelineSettings,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`registry`: where the reconciler's counters are served."""
        self.settings = settings
        self.pipeline = pipeline
        self.captions = captions
        self._batcher = pipeline_batcher(pipeline, settings)
        self._batcher.start()
        # as many tries at once as an arq worker runs: a thousand uploads wait for their turn,
        # not against their time limit
        self._image_turns = asyncio.Semaphore(jobs_at_once(settings, captions=False))
        self._caption_turns = asyncio.Semaphore(jobs_at_once(settings, captions=True))
        self._ingest = CrawlIngest(pipeline, self)
        self._shard_settings = shard_settings(settings, pipeline.settings.crawl)
        self._shard_turns = asyncio.Semaphore(pipeline.settings.crawl.shards_at_once)
        self._exports = ExportJobs(pipeline.engine, pipeline.store, pipeline.settings.storage.s3)
        self._export_settings = export_settings(settings, pipeline.settings.crawl)
        self._export_turns = asyncio.Semaphore(1)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reconciler = Reconciler.create(pipeline.engine, settings, registry)
        self._reconciling = asyncio.get_running_loop().create_task(self._reconcile_often())

    async def _reconcile_often(self) -> None:
        """The reconciler on a timer: records whose task was lost (a bug, or a process that
        stopped) are queued again."""
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            try:
                await self._reconciler.reconcile(self)
            except Exception:  # the next round tries again; the queue must not stop
                logger.exception("reconciling the jobs failed")

    async def job_gone(self, key: str) -> bool:
        return key not in self._tasks

    def _start(
        self,
        key: str,
        attempts: Attempts,
        turns: asyncio.Semaphore,
        settings: PipelineSettings | None = None,
    ) -> None:
        if key in self._tasks:
            return
        retrying = self._retrying(key, attempts, turns, settings or self.settings)
        task = asyncio.get_running_loop().create_task(retrying, name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def enqueue(self, image_id: str, embedded: EmbeddedImage | None = None) -> None:
        attempts = ImageAttempts(self, self._batcher, self.pipeline, image_id, embedded)
        self._start(image_job_id(image_id), attempts, self._image_turns)

    async def enqueue_caption(self, job: CaptionJob) -> None:
        attempts = CaptionAttempts(self.captions, job)
        self._start(job.job_id, attempts, self._caption_turns)

    async def enqueue_shard(self, crawl_id: str, shard: str) -> None:
        attempts = ShardAttempts(self._ingest, crawl_id, shard)
        key = shard_job_id(crawl_id, shard)
        self._start(key, attempts, self._shard_turns, self._shard_settings)

    async def enqueue_export(self, export_id: str) -> None:
        attempts = ExportAttempts(self._exports, export_id)
        key = export_job_id(export_id)
        self._start(key, attempts, self._export_turns, self._export_settings)

    async def _retrying(
        self,
        key: str,
        attempts: Attempts,
        turns: asyncio.Semaphore,
        settings: PipelineSettings,
    ) -> None:
        loop = asyncio.get_running_loop()
        waiting_since: float | None = None  # since when a dependency has been found down
        attempt = 1
        while True:
            waited = 0.0 if waiting_since is None else loop.time() - waiting_since
            try:
                async with turns:
                    status = await attempt_in_time(settings, attempts, attempt, waited)
                log_try(key, attempt, status)
                return
            except TryStopped as exc:
                logger.warning("job %s, try %d: %s; retrying", key, attempt, exc)
                attempt += 1
            except UnavailableError as exc:
                logger.warning("job %s: %s; retrying", key, exc.message)
                waiting_since = loop.time() if waiting_since is None else waiting_since
            except ImageGone:
                return
            except Exception:  # a bug must not kill the queue; the reconciler queues it again
                logger.exception("job %s failed unexpectedly", key)
                return
            await asyncio.sleep(retry_delay(settings, waited))

    async def close(self) -> None:
        self._reconciling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reconciling
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._batcher.stop()
