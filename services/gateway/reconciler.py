"""Jobs that were lost, found and settled by construction.

A record can outlive its job: its enqueue failed (Redis away at upload), Redis lost its data, a
job crashed on a bug, or arq dropped a job. Every `reconcile_interval_seconds` (an arq cron job
on the image queue, a timer in the gateway's own process) the reconciler looks at the records
not ended and unchanged for `reconcile_grace_seconds`: one whose job is gone is queued again, or,
when its tries are used up (`max_tries`), recorded failed with the reason. Captions waiting for
an image that ended are treated the same way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.engine import Engine

from services.common.database import utcnow
from services.common.request_ids import new_request_id, request_context
from services.gateway import records
from services.gateway.config import PipelineSettings
from services.gateway.jobs import CaptionJob, gave_up, image_job_id

logger = logging.getLogger(__name__)

JOB_LOST = "its job was lost"


class ReconciledQueue(Protocol):
    """What the reconciler needs of a queue (both kinds of `JobQueue` have it)."""

    async def enqueue(self, image_id: str) -> None: ...

    async def enqueue_caption(self, job: CaptionJob) -> None: ...

    async def job_gone(self, key: str) -> bool: ...


class ReconcilerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requeued = Counter(
            "seavl_gateway_reconciler_requeued_total",
            "Jobs found lost and queued again by the reconciler",
            ["kind"],
            registry=registry,
        )
        self.failed = Counter(
            "seavl_gateway_reconciler_failed_total",
            "Records whose job was lost after their last try, recorded failed by the reconciler",
            ["kind"],
            registry=registry,
        )


@dataclass
class Reconciler:
    engine: Engine
    settings: PipelineSettings
    metrics: ReconcilerMetrics

    @classmethod
    def create(
        cls,
        engine: Engine,
        settings: PipelineSettings,
        registry: CollectorRegistry | None = None,
    ) -> Reconciler:
        """`registry`: where the counters are served (a fresh one, unserved, when None)."""
        return cls(engine, settings, ReconcilerMetrics(registry or CollectorRegistry()))

    def stuck(self) -> list[records.Stuck]:
        """Images queued or processing, and captions queued whose image ended, unchanged for
        the grace period."""
        before = utcnow() - timedelta(seconds=self.settings.reconcile_grace_seconds)
        return records.stuck_since(self.engine, before)

    async def reconcile(self, queue: ReconciledQueue) -> tuple[int, int]:
        """One round: (jobs queued again, records failed). The jobs it queues carry the round's
        own request id, as its log line does."""
        with request_context(new_request_id()):
            return await self._reconcile(queue)

    async def _reconcile(self, queue: ReconciledQueue) -> tuple[int, int]:
        requeued = failed = 0
        for stuck in await asyncio.to_thread(self.stuck):
            key = image_job_id(stuck.image_id) if stuck.caption is None else stuck.caption.job_id
            if not await queue.job_gone(key):
                continue
            kind = "image" if stuck.caption is None else "caption"
            if stuck.tries >= self.settings.max_tries:
                error = gave_up(stuck.tries, JOB_LOST)
                await asyncio.to_thread(records.fail_stuck, self.engine, stuck, error)
                self.metrics.failed.labels(kind).inc()
                failed += 1
                continue
            if stuck.caption is None:
                await queue.enqueue(stuck.image_id)
            else:
                await queue.enqueue_caption(stuck.caption)
            self.metrics.requeued.labels(kind).inc()
            requeued += 1
        if requeued or failed:
            logger.warning("reconciler: %d lost jobs queued again, %d failed", requeued, failed)
        return requeued, failed
