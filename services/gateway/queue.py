"""Where upload jobs go: arq on Redis when `REDIS_URL` is set, the gateway's own process if not.

Both run `Pipeline.process` and retry it, with a doubling delay, while a dependency is down.
A job is keyed by the image's sha256, so enqueueing the same image twice runs it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.exceptions import RedisError

from services.common.batching import MicroBatcher
from services.common.errors import UnavailableError
from services.gateway.config import PipelineSettings
from services.gateway.pipeline import ImageGone, Job, JobOutcome, Pipeline

logger = logging.getLogger(__name__)

PROCESS_IMAGE = "process_image"
PipelineBatcher = MicroBatcher[Job, JobOutcome]


def job_id(image_id: str) -> str:
    return f"process:{image_id}"


def retry_delay(settings: PipelineSettings, attempt: int) -> float:
    return float(settings.retry_delay_seconds * 2 ** (attempt - 1))


class JobQueue(Protocol):
    async def enqueue(self, image_id: str) -> None: ...

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

    async def enqueue(self, image_id: str) -> None:
        try:
            await self.pool.enqueue_job(PROCESS_IMAGE, image_id, _job_id=job_id(image_id))
        except (RedisError, OSError) as exc:
            raise UnavailableError(f"the job queue (Redis) is unreachable: {exc}") from exc

    async def close(self) -> None:
        await self.pool.aclose()


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


async def run_job(batcher: PipelineBatcher, job: Job) -> str:
    """One job through the batcher; raises what its outcome says to raise."""
    outcome = await batcher.submit_many([job])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class InProcessQueue:
    """Jobs as asyncio tasks of this process (embedded mode), batched as arq workers batch."""

    def __init__(self, pipeline: Pipeline, settings: PipelineSettings) -> None:
        self.settings = settings
        self._batcher = pipeline_batcher(pipeline, settings)
        self._batcher.start()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def enqueue(self, image_id: str) -> None:
        if image_id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._run(image_id), name=job_id(image_id))
        self._tasks[image_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(image_id, None))

    async def _run(self, image_id: str) -> None:
        attempts = self.settings.max_tries
        for attempt in range(1, attempts + 1):
            try:
                await run_job(self._batcher, Job(image_id, attempt, attempt == attempts))
                return
            except UnavailableError as exc:
                logger.warning("job %s: %s; retrying", image_id, exc.message)
                await asyncio.sleep(retry_delay(self.settings, attempt))
            except ImageGone:
                return
            except Exception:  # a bug must not kill the queue; the record says "processing"
                logger.exception("job %s failed unexpectedly", image_id)
                return

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._batcher.stop()
