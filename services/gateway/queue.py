"""Where jobs go: arq on Redis when `REDIS_URL` is set, the gateway's own process if not.

Both run the same job code (`Pipeline.process_batch`, `CaptionJobs.run`) and retry it, with a
doubling delay, while a dependency is down. A processing job is keyed by the image's sha256, so
enqueueing the same image twice runs it once; a caption job by image, language and request.
When an image's processing ends, the captions asked for it are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.exceptions import RedisError

from services.common.batching import MicroBatcher
from services.common.errors import UnavailableError
from services.gateway.captions import CaptionJobs
from services.gateway.config import PipelineSettings
from services.gateway.jobs import CaptionJob, ImageGone, Job, JobOutcome
from services.gateway.pipeline import Pipeline

logger = logging.getLogger(__name__)

PROCESS_IMAGE = "process_image"
CAPTION_IMAGE = "caption_image"
# Captions wait seconds on a VLM each: their own queue and workers, so that a thousand queued
# captions never hold up the processing of new uploads.
CAPTION_QUEUE = "arq:captions"
PipelineBatcher = MicroBatcher[Job, JobOutcome]


def job_id(image_id: str) -> str:
    return f"process:{image_id}"


def retry_delay(settings: PipelineSettings, attempt: int) -> float:
    return float(settings.retry_delay_seconds * 2 ** (attempt - 1))


class JobQueue(Protocol):
    async def enqueue(self, image_id: str) -> None: ...

    async def enqueue_caption(self, job: CaptionJob) -> None: ...

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
            await self.pool.enqueue_job(function, *args, **options)
        except (RedisError, OSError) as exc:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {exc}") from exc

    async def enqueue(self, image_id: str) -> None:
        await self._enqueue(PROCESS_IMAGE, image_id, _job_id=job_id(image_id))

    async def enqueue_caption(self, job: CaptionJob) -> None:
        await self._enqueue(
            CAPTION_IMAGE,
            job.image_id,
            job.language,
            job.request,
            _job_id=job.job_id,
            _queue_name=CAPTION_QUEUE,
        )

    async def close(self) -> None:
        await self.pool.aclose()


def caption_executor(settings: PipelineSettings) -> ThreadPoolExecutor:
    """Caption jobs wait seconds on a VLM: their own threads, as many as may wait at once."""
    return ThreadPoolExecutor(settings.caption_concurrency, thread_name_prefix="caption")


def pipeline_batcher(pipeline: Pipeline, settings: PipelineSettings) -> PipelineBatcher:
    """Groups the jobs running at the same time into `Pipeline.process_batch` calls."""
    executor = ThreadPoolExecutor(settings.concurrent_batches, thread_name_prefix="pipeline")
    return MicroBatcher(
        pipeline.process_batch,
        executor,
        max_batch_size=settings.batch_size,
        max_wait_seconds=settings.batch_wait_ms / 1000,
        max_queue=1_000_000,  # bounded by the jobs in flight, which the callers bound
        max_concurrent_batches=settings.concurrent_batches,
    )


async def run_job(queue: JobQueue, batcher: PipelineBatcher, job: Job) -> str:
    """One job through the batcher, then the captions waiting for it onto `queue`; raises what
    its outcome says to raise."""
    outcome = await batcher.submit_many([job])[0]
    if isinstance(outcome, Exception):
        raise outcome
    for caption in outcome.captions:
        await queue.enqueue_caption(caption)
    return outcome.status


async def run_caption(
    executor: ThreadPoolExecutor, captions: CaptionJobs, job: CaptionJob, attempt: int, final: bool
) -> str:
    """One attempt at a caption job, on the threads that wait on the captioner."""
    return await asyncio.get_running_loop().run_in_executor(
        executor, captions.run, job, attempt, final
    )


class InProcessQueue:
    """Jobs as asyncio tasks of this process (embedded mode), batched as arq workers batch."""

    def __init__(
        self, pipeline: Pipeline, captions: CaptionJobs, settings: PipelineSettings
    ) -> None:
        self.settings = settings
        self.captions = captions
        self._batcher = pipeline_batcher(pipeline, settings)
        self._batcher.start()
        self._caption_executor = caption_executor(settings)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _start(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if key in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(work(), name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def enqueue(self, image_id: str) -> None:
        def attempt(number: int, final: bool) -> Awaitable[str]:
            return run_job(self, self._batcher, Job(image_id, number, final))

        self._start(job_id(image_id), lambda: self._retrying(job_id(image_id), attempt))

    async def enqueue_caption(self, job: CaptionJob) -> None:
        def attempt(number: int, final: bool) -> Awaitable[str]:
            return run_caption(self._caption_executor, self.captions, job, number, final)

        self._start(job.job_id, lambda: self._retrying(job.job_id, attempt))

    async def _retrying(self, key: str, attempt: Callable[[int, bool], Awaitable[str]]) -> None:
        tries = self.settings.max_tries
        for number in range(1, tries + 1):
            try:
                await attempt(number, number == tries)
                return
            except UnavailableError as exc:
                logger.warning("job %s: %s; retrying", key, exc.message)
                await asyncio.sleep(retry_delay(self.settings, number))
            except ImageGone:
                return
            except Exception:  # a bug must not kill the queue; the record says where it stopped
                logger.exception("job %s failed unexpectedly", key)
                return

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._batcher.stop()
        self._caption_executor.shutdown(wait=False, cancel_futures=True)
