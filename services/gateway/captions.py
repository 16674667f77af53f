"""Captions as queued jobs: asked for at upload or for many stored images at once, run by the
captioner once the image is processed, stored with the image's record.

A caption job is keyed by (image, language, request number): retried while the captioner or
its VLM is down, recorded as failed with the reason when the answer is no caption. A try
stopped from outside (past its time limit, or its worker died) is recorded by
`CaptionJobs.stop`; a caption that has ended is not written again by its job.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from services.common.captions import CaptionRequest
from services.common.clients import CaptionerClient
from services.common.countries import SeaCountry
from services.common.errors import ServiceError, UnavailableError
from services.common.states import FINISHED, JobStatus
from services.gateway import records
from services.gateway.config import GatewaySettings
from services.gateway.jobs import CaptionJob, ImageGone, gave_up, gave_up_waiting

logger = logging.getLogger(__name__)


@dataclass
class CaptionJobs:
    engine: Engine
    captioner: CaptionerClient | None  # None: this process has no captioner configured
    retry_window_seconds: float  # how long a caption waits out a captioner that is down

    @classmethod
    def create(cls, settings: GatewaySettings, engine: Engine) -> CaptionJobs:
        captioner = CaptionerClient(settings.captioner) if settings.captioner else None
        return cls(engine, captioner, settings.pipeline.retry_window_seconds)

    async def close(self) -> None:
        if self.captioner is not None:
            await self.captioner.close()

    async def _update(self, job: CaptionJob, **fields: object) -> str | None:
        return await asyncio.to_thread(records.update_caption, self.engine, job, **fields)

    async def run(self, job: CaptionJob, attempt: int, final: bool) -> str:
        """The caption's status after this attempt; raises `UnavailableError` to be retried.
        The captioner is awaited (a VLM takes seconds and holds no thread); SQL
        runs in threads."""
        found = await asyncio.to_thread(records.caption_job_records, self.engine, job)
        if found is None:
            raise ImageGone(job.job_id)
        image, caption = found
        if caption.status in FINISHED:
            return caption.status  # a job run twice writes once
        if image.status == JobStatus.FAILED:
            await self._update(
                job, status=JobStatus.FAILED, error=f"the image failed: {image.error}"
            )
            return JobStatus.FAILED
        if image.status != JobStatus.DONE:
            return "waiting"  # the image's own job queues the caption when it ends
        if self.captioner is None:
            await self._update(job, status=JobStatus.FAILED, error="no captioner is configured")
            return JobStatus.FAILED
        await self._update(job, attempts=attempt)
        try:
            request = CaptionRequest(
                key=image.id,  # the captioner reads it from the same store
                language=job.language,
                location=image.location,
                countries=[SeaCountry(c) for c in image.countries.split(",") if c],
                location_aware=caption.location_aware,
            )
            answer = await self.captioner.caption(request)
        except UnavailableError as exc:
            if not final:
                await self._update(job, error=f"retrying: {exc.message}")
                raise
            error = gave_up_waiting(self.retry_window_seconds, exc.message)
            await self._update(job, status=JobStatus.FAILED, error=error)
            return JobStatus.FAILED
        except ServiceError as exc:
            await self._update(job, status=JobStatus.FAILED, error=f"{exc.code}: {exc.message}")
            return JobStatus.FAILED
        await self._update(
            job,
            status=JobStatus.DONE,
            caption=answer.caption,
            detected_language=answer.language,
            language_ok=answer.language_ok,
            language_confidence=answer.language_confidence,
            backend=answer.backend,
            model=answer.model,
            prompt_kind=answer.prompt_kind.value,
            location=answer.location,
            error=None,
        )
        logger.info("caption %s done (%s)", job.job_id, answer.backend)
        return JobStatus.DONE

    def stop(self, job: CaptionJob, attempt: int, final: bool, reason: str) -> str:
        """A try stopped from outside (past its time limit, or its worker died): raises
        `UnavailableError` to be retried, or after the last try records the caption failed with
        `reason`; a caption that ended meanwhile keeps its end."""
        logger.warning("caption %s, try %d: %s", job.job_id, attempt, reason)
        if final:
            status = records.update_caption(
                self.engine,
                job,
                status=JobStatus.FAILED,
                attempts=attempt,
                error=gave_up(attempt, reason),
            )
        else:
            status = records.update_caption(
                self.engine, job, attempts=attempt, error=f"retrying: {reason}"
            )
        if status is None:
            raise ImageGone(job.job_id)
        if status not in FINISHED:
            raise UnavailableError(reason)
        return status
