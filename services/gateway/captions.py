"""Captions as queued jobs: asked for at upload or for many stored images at once, run by the
captioner once the image is processed, stored with the image's record.

A caption job is keyed by (image, language, request number): retried while the captioner or
its VLM is down, recorded as failed with the reason when the answer is no caption. A try
stopped from outside (past its time limit, or its worker died) is recorded by
`CaptionJobs.stop`; a caption that has ended is not written again by its job.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common.captions import CaptionLanguage, CaptionRequest
from services.common.clients import CaptionerClient
from services.common.countries import SeaCountry
from services.common.database import session_scope, utcnow
from services.common.errors import ServiceError, UnavailableError
from services.common.storage import ObjectStore
from services.gateway.config import GatewaySettings
from services.gateway.jobs import FINISHED, CaptionJob, ImageGone, gave_up, gave_up_waiting
from services.gateway.tables import CaptionRow, ImageRow

logger = logging.getLogger(__name__)


def ask_caption(
    session: Session,
    image_id: str,
    language: CaptionLanguage,
    location_aware: bool | None,
    redo: bool,
) -> CaptionRow | None:
    """The caption row to run: new, still queued, or re-opened as a new request (a failed one,
    or a done one when `redo`); None for a done caption kept as it is."""
    row = session.get(CaptionRow, (image_id, language.value))
    if row is None:
        row = CaptionRow(image_id=image_id, language=language.value, location_aware=location_aware)
    elif row.status == "done" and not redo:
        return None
    elif row.status != "queued":
        row.status, row.requests, row.error, row.attempts = "queued", row.requests + 1, None, 0
        row.location_aware = location_aware
        row.updated_at = utcnow()
    session.add(row)
    return row


def captions_of(
    session: Session, image_ids: Sequence[str], status: str | None = None
) -> dict[str, list[CaptionRow]]:
    """These images' caption rows (those in `status`, if given), by image, in language order."""
    query = select(CaptionRow).where(col(CaptionRow.image_id).in_(image_ids))
    if status is not None:
        query = query.where(CaptionRow.status == status)
    found: dict[str, list[CaptionRow]] = {}
    for row in session.exec(query.order_by(col(CaptionRow.language))).all():
        found.setdefault(row.image_id, []).append(row)
    return found


def job_of(row: CaptionRow) -> CaptionJob:
    return CaptionJob(row.image_id, row.language, row.requests)


def all_pending_captions(engine: Engine) -> list[CaptionJob]:
    """Every queued caption whose image is processed (in-process jobs restart with these)."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(CaptionRow)
            .join(ImageRow, col(ImageRow.id) == col(CaptionRow.image_id))
            .where(CaptionRow.status == "queued")
            .where(col(ImageRow.status).in_(FINISHED))
        ).all()
    return [job_of(row) for row in rows]


@dataclass
class CaptionJobs:
    engine: Engine
    store: ObjectStore
    captioner: CaptionerClient | None  # None: this process has no captioner configured
    retry_window_seconds: float  # how long a caption waits out a captioner that is down

    @classmethod
    def create(cls, settings: GatewaySettings, engine: Engine, store: ObjectStore) -> CaptionJobs:
        captioner = CaptionerClient(settings.captioner) if settings.captioner else None
        return cls(engine, store, captioner, settings.pipeline.retry_window_seconds)

    def close(self) -> None:
        if self.captioner is not None:
            self.captioner.close()

    def _update(self, job: CaptionJob, **fields: object) -> str | None:
        """Writes the job's caption unless it has ended (a try stopped from outside may still be
        running in its thread); its status after, None when it was asked again since."""
        with session_scope(self.engine) as session:
            row = session.get(CaptionRow, (job.image_id, job.language))
            if row is None or row.requests != job.request:
                return None  # asked again since: the newer job writes
            if row.status in FINISHED:
                return row.status
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            session.add(row)
            return row.status

    def _load(self, job: CaptionJob) -> tuple[ImageRow, CaptionRow]:
        with session_scope(self.engine) as session:
            image = session.get(ImageRow, job.image_id)
            caption = session.get(CaptionRow, (job.image_id, job.language))
        if image is None or caption is None or caption.requests != job.request:
            raise ImageGone(job.job_id)
        return image, caption

    def run(self, job: CaptionJob, attempt: int, final: bool) -> str:
        """The caption's status after this attempt; raises `UnavailableError` to be retried."""
        image, caption = self._load(job)
        if caption.status in FINISHED:
            return caption.status  # a job run twice writes once
        if image.status == "failed":
            self._update(job, status="failed", error=f"the image failed: {image.error}")
            return "failed"
        if image.status != "done":
            return "waiting"  # the image's own job queues the caption when it ends
        if self.captioner is None:
            self._update(job, status="failed", error="no captioner is configured")
            return "failed"
        self._update(job, attempts=attempt)
        try:
            request = CaptionRequest(
                data=base64.b64encode(self.store.get(image.id)).decode("ascii"),
                language=job.language,
                location=image.location,
                countries=[SeaCountry(c) for c in image.countries.split(",") if c],
                location_aware=caption.location_aware,
            )
            answer = self.captioner.caption(request)
        except UnavailableError as exc:
            if not final:
                self._update(job, error=f"retrying: {exc.message}")
                raise
            error = gave_up_waiting(self.retry_window_seconds, exc.message)
            self._update(job, status="failed", error=error)
            return "failed"
        except ServiceError as exc:
            self._update(job, status="failed", error=f"{exc.code}: {exc.message}")
            return "failed"
        self._update(
            job,
            status="done",
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
        return "done"

    def stop(self, job: CaptionJob, attempt: int, final: bool, reason: str) -> str:
        """A try stopped from outside (past its time limit, or its worker died): raises
        `UnavailableError` to be retried, or after the last try records the caption failed with
        `reason`; a caption that ended meanwhile keeps its end."""
        logger.warning("caption %s, try %d: %s", job.job_id, attempt, reason)
        if final:
            status = self._update(
                job, status="failed", attempts=attempt, error=gave_up(attempt, reason)
            )
        else:
            status = self._update(job, attempts=attempt, error=f"retrying: {reason}")
        if status is None:
            raise ImageGone(job.job_id)
        if status not in FINISHED:
            raise UnavailableError(reason)
        return status
