"""What happens to an upload: embed → relevance score → dedup insert-if-unique → record.

The same code runs in arq workers (Redis) and, without Redis, in the gateway's own process.
Jobs that wait at the same time are processed as one batch: one call to each service for all
of them, one transaction for their records.
Every step is idempotent (the image's sha256 names its object, its dedup point and its job),
so a job that is retried, or run again after its worker was killed, rewrites the same records.
A dependency that is down raises `UnavailableError`, and the job is retried later; anything
else wrong with the image is recorded on it as a failure with its reason. A try stopped from
outside (past its time limit, or its worker died) is recorded by `Pipeline.stop`; a record that
has ended is never written again, and a try's late write once it was stopped is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common.clients import DedupClient, EmbedderClient, FilterClient, ImageReference
from services.common.database import session_scope, utcnow
from services.common.errors import ServiceError, UnavailableError
from services.common.schemas import (
    DedupInsertBatch,
    DedupInsertRequest,
    EmbeddedImage,
    ImageFailure,
)
from services.common.storage import ObjectNotFoundError, ObjectStore, make_store
from services.gateway.captions import captions_of, job_of
from services.gateway.config import GatewaySettings
from services.gateway.jobs import (
    FINISHED,
    ImageGone,
    Job,
    JobOutcome,
    Processed,
    gave_up,
    gave_up_waiting,
)
from services.gateway.tables import ImageRow

logger = logging.getLogger(__name__)


def _write_changes(
    session: Session,
    changes: dict[str, dict[str, object]],
    claimed: Mapping[str, int] | None = None,
) -> None:
    """UPDATE by primary key of the records that have not ended, one executemany per set of
    changed fields (no ORM round trips: a batch's records cost one statement, not a SELECT and
    an UPDATE each). With `claimed` (the try that claimed each record), only while that try
    still holds it: a try stopped from outside, whose thread ran on, writes nothing."""
    now = utcnow()
    by_fields: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for image_id, fields in changes.items():
        holder = {} if claimed is None else {"claimed_attempt": claimed[image_id]}
        by_fields.setdefault(tuple(sorted(fields)), []).append(
            {"image_id": image_id, "updated_at": now, **holder, **fields}
        )
    for names, parameters in by_fields.items():
        statement = (
            update(ImageRow)
            .where(col(ImageRow.id) == bindparam("image_id"))
            .where(*(col(ImageRow.status) != status for status in FINISHED))
            .values({name: bindparam(name) for name in (*names, "updated_at")})
        )
        if claimed is not None:
            statement = statement.where(col(ImageRow.attempts) == bindparam("claimed_attempt"))
        session.connection().execute(statement, parameters)


def _retry_or_fail(job: Job, reason: str) -> dict[str, object]:
    """A try that could not finish: the record waits for the next one, or ends after the last."""
    if job.final:
        return {"status": "failed", "error": gave_up(job.attempt, reason)}
    return {"status": "queued", "error": f"retrying: {reason}"}


def _processed(session: Session, statuses: dict[str, str]) -> dict[str, Processed]:
    """Each image's status, with the captions waiting for those whose processing ended."""
    ended = [image_id for image_id, status in statuses.items() if status in FINISHED]
    waiting = captions_of(session, ended, status="queued") if ended else {}
    return {
        image_id: Processed(status, tuple(job_of(row) for row in waiting.get(image_id, ())))
        for image_id, status in statuses.items()
    }


@dataclass
class Pipeline:
    settings: GatewaySettings
    engine: Engine
    store: ObjectStore
    embedder: EmbedderClient
    filter: FilterClient
    dedup: DedupClient

    @classmethod
    def create(cls, settings: GatewaySettings, engine: Engine) -> Pipeline:
        return cls(
            settings=settings,
            engine=engine,
            store=make_store(settings.s3, settings.storage_dir),
            embedder=EmbedderClient(settings.embedder),
            filter=FilterClient(settings.filter),
            dedup=DedupClient(settings.dedup),
        )

    def close(self) -> None:
        for client in (self.embedder, self.filter, self.dedup):
            client.close()

    def _claim(
        self, jobs: Sequence[Job]
    ) -> tuple[list[tuple[Job, ImageRow]], dict[str, JobOutcome]]:
        """Loads the batch's records and marks the ones still to do "processing", in one
        transaction; returns those, and the outcome of the jobs with nothing to do."""
        ids = [job.image_id for job in jobs]
        outcomes: dict[str, JobOutcome] = {}
        active: dict[str, tuple[Job, ImageRow]] = {}
        with session_scope(self.engine) as session:
            rows = {
                row.id: row
                for row in session.exec(select(ImageRow).where(col(ImageRow.id).in_(ids))).all()
            }
            for job in jobs:
                row = rows.get(job.image_id)
                if row is None:
                    outcomes[job.image_id] = ImageGone(job.image_id)
                elif row.status in FINISHED:  # run again (e.g. its worker was killed after
                    outcomes[job.image_id] = Processed(row.status)  # the write): nothing to redo
                else:
                    active.setdefault(job.image_id, (job, row))
            session.expunge_all()  # the rows are read-only snapshots from here on
            _write_changes(
                session,
                {
                    image_id: {"status": "processing", "attempts": job.attempt}
                    for image_id, (job, _) in active.items()
                },
            )
        return list(active.values()), outcomes

    def process_batch(self, jobs: Sequence[Job]) -> list[JobOutcome]:
        """Runs the pipeline for several images with one call per dependency; per job, the
        status it ends in with the captions to start, or the exception its caller raises."""
        active, outcomes = self._claim(jobs)
        changes: dict[str, dict[str, object]] = {}
        if active:
            try:
                changes = self._run([row for _, row in active])
            except UnavailableError as exc:
                window = self.settings.pipeline.retry_window_seconds
                for job, _ in active:
                    if job.final:  # the dependency stayed down for the job's whole window
                        changes[job.image_id] = {
                            "status": "failed",
                            "error": gave_up_waiting(window, exc.message),
                        }
                    else:
                        changes[job.image_id] = _retry_or_fail(job, exc.message)
                        outcomes[job.image_id] = exc
        statuses = {
            **{i: o.status for i, o in outcomes.items() if isinstance(o, Processed)},
            **{i: str(c["status"]) for i, c in changes.items() if i not in outcomes},
        }
        with session_scope(self.engine) as session:
            _write_changes(session, changes, {job.image_id: job.attempt for job, _ in active})
            outcomes.update(_processed(session, statuses))
        return [outcomes[job.image_id] for job in jobs]

    def stop(self, job: Job, reason: str) -> JobOutcome:
        """The outcome of a try stopped from outside (past its time limit, or its worker died):
        the record waits for the next try, or after the last one ends failed with `reason`; a
        record that ended meanwhile keeps its end."""
        logger.warning("image %s, try %d: %s", job.image_id, job.attempt, reason)
        with session_scope(self.engine) as session:
            change = {**_retry_or_fail(job, reason), "attempts": job.attempt}
            _write_changes(session, {job.image_id: change})
            row = session.get(ImageRow, job.image_id)
            if row is None:
                return ImageGone(job.image_id)
            if row.status not in FINISHED:
                return UnavailableError(reason)
            return _processed(session, {row.id: row.status})[row.id]

    def _run(self, rows: list[ImageRow]) -> dict[str, dict[str, object]]:
        """Field changes per image; raises `UnavailableError` when a dependency is down."""
        pipeline = self.settings.pipeline
        changes: dict[str, dict[str, object]] = {}

        def fail(image_id: str, error: ServiceError) -> None:
            changes[image_id] = {"status": "failed", "error": f"{error.code}: {error.message}"}

        stored: list[tuple[ImageRow, bytes]] = []
        # in upload order: of two copies in one batch, dedup keeps the one uploaded first
        for row in sorted(rows, key=lambda row: (row.created_at, row.id)):
            try:
                stored.append((row, self.store.get(row.id)))
            except ObjectNotFoundError as exc:
                fail(row.id, exc)
        results = (
            self.embedder.embed([ImageReference(data=data) for _, data in stored]) if stored else []
        )
        embedded: list[tuple[ImageRow, EmbeddedImage]] = []
        for (row, _), result in zip(stored, results, strict=True):
            if isinstance(result, ImageFailure):
                fail(row.id, ServiceError(422, result.error.code, result.error.message))
            else:
                embedded.append((row, result))
        if not embedded:
            return changes
        model = embedded[0][1].model
        notes: str | None = None
        relevance: list[dict[str, object]] = [{} for _ in embedded]
        try:
            scored = self.filter.score(
                pipeline.reference_set, [e.embedding for _, e in embedded], model
            )
            relevance = [
                {
                    "score": r.score,
                    "tier": r.tier,
                    "accepted": r.accepted,
                    "best_country": r.best_country,
                }
                for r in scored.results
            ]
        except ServiceError as exc:
            if isinstance(exc, UnavailableError):
                raise
            # No usable reference set yet: the images are kept, unscored, and say why.
            notes = f"relevance not scored: {exc.code}: {exc.message}"
        batch = DedupInsertBatch(
            items=[
                DedupInsertRequest(
                    id=row.id,
                    namespace=pipeline.dedup_namespace,
                    model=e.model,
                    vector=e.embedding,
                    phash=e.phash,
                )
                for row, e in embedded
            ]
        )
        try:
            inserted = self.dedup.insert_batch(batch).results
        except ServiceError as exc:
            if isinstance(exc, UnavailableError):
                raise
            for row, _ in embedded:
                fail(row.id, exc)
            return changes
        for (row, e), scores, outcome in zip(embedded, relevance, inserted, strict=True):
            duplicate_of = outcome.duplicate_of.id if outcome.duplicate_of else None
            changes[row.id] = {
                "status": "done",
                "phash": e.phash,
                "model": e.model,
                "duplicate_of": duplicate_of,
                "notes": notes,
                "error": None,
                **scores,
            }
        logger.info("pipeline batch of %d images done", len(embedded))
        return changes
