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

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from services.common.clients import DedupClient, EmbedderClient, FilterClient
from services.common.errors import ServiceError, UnavailableError
from services.common.schemas import (
    DedupInsertBatch,
    DedupInsertRequest,
    EmbeddedImage,
    ImageFailure,
    ImageInput,
)
from services.common.states import FINISHED, JobStatus
from services.common.storage import ObjectStore
from services.gateway import records
from services.gateway.config import GatewaySettings
from services.gateway.jobs import (
    ImageGone,
    Job,
    JobOutcome,
    Processed,
    gave_up,
    gave_up_waiting,
)
from services.gateway.tables import ImageRow

logger = logging.getLogger(__name__)


def _retry_or_fail(job: Job, reason: str) -> dict[str, object]:
    """A try that could not finish: the record waits for the next one, or ends after the last."""
    if job.final:
        return {"status": JobStatus.FAILED, "error": gave_up(job.attempt, reason)}
    return {"status": JobStatus.QUEUED, "error": f"retrying: {reason}"}


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
            store=settings.storage.open(),
            embedder=EmbedderClient(settings.embedder),
            filter=FilterClient(settings.filter),
            dedup=DedupClient(settings.dedup),
        )

    async def close(self) -> None:
        for client in (self.embedder, self.filter, self.dedup):
            await client.close()

    def _claim(
        self, jobs: Sequence[Job]
    ) -> tuple[list[tuple[Job, ImageRow]], dict[str, JobOutcome]]:
        """Claims the batch's records (marked "processing" by their try, in one transaction);
        returns those still to do, and the outcome of the jobs with nothing to do."""
        found = records.claim(self.engine, {job.image_id: job.attempt for job in jobs})
        outcomes: dict[str, JobOutcome] = {}
        active: dict[str, tuple[Job, ImageRow]] = {}
        for job in jobs:
            row = found.get(job.image_id)
            if row is None:
                outcomes[job.image_id] = ImageGone(job.image_id)
            elif row.status in FINISHED:  # run again (e.g. its worker was killed after the
                outcomes[job.image_id] = Processed(row.status)  # write): nothing to redo
            else:
                active.setdefault(job.image_id, (job, row))
        return list(active.values()), outcomes

    async def process_batch(self, jobs: Sequence[Job]) -> list[JobOutcome]:
        """Runs the pipeline for several images with one call per dependency; per job, the
        status it ends in with the captions to start, or the exception its caller raises.
        The calls to the services wait on the event loop; SQL and the store in threads."""
        active, outcomes = await asyncio.to_thread(self._claim, jobs)
        changes: dict[str, dict[str, object]] = {}
        if active:
            try:
                carried = {job.image_id: job.embedded for job, _ in active if job.embedded}
                changes = await self._run([row for _, row in active], carried)
            except UnavailableError as exc:
                window = self.settings.pipeline.retry_window_seconds
                for job, _ in active:
                    if job.final:  # the dependency stayed down for the job's whole window
                        changes[job.image_id] = {
                            "status": JobStatus.FAILED,
                            "error": gave_up_waiting(window, exc.message),
                        }
                    else:
                        changes[job.image_id] = _retry_or_fail(job, exc.message)
                        outcomes[job.image_id] = exc
        statuses = {
            **{i: o.status for i, o in outcomes.items() if isinstance(o, Processed)},
            **{i: str(c["status"]) for i, c in changes.items() if i not in outcomes},
        }
        claimed = {job.image_id: job.attempt for job, _ in active}
        outcomes.update(
            await asyncio.to_thread(records.finish, self.engine, changes, claimed, statuses)
        )
        return [outcomes[job.image_id] for job in jobs]

    def stop(self, job: Job, reason: str) -> JobOutcome:
        """The outcome of a try stopped from outside (past its time limit, or its worker died):
        the record waits for the next try, or after the last one ends failed with `reason`; a
        record that ended meanwhile keeps its end."""
        logger.warning("image %s, try %d: %s", job.image_id, job.attempt, reason)
        change = {**_retry_or_fail(job, reason), "attempts": job.attempt}
        outcome = records.stop_image(self.engine, job.image_id, change)
        if outcome is None:
            return ImageGone(job.image_id)
        if isinstance(outcome, Processed):
            return outcome
        return UnavailableError(reason)

    async def _run(
        self, rows: list[ImageRow], carried: dict[str, EmbeddedImage]
    ) -> dict[str, dict[str, object]]:
        """Field changes per image; raises `UnavailableError` when a dependency is down.
        `carried`: embeddings the jobs brought (the upload's privacy pass encoded those bytes),
        by image; only the others are embedded."""
        pipeline = self.settings.pipeline
        changes: dict[str, dict[str, object]] = {}

        def fail(image_id: str, error: ServiceError) -> None:
            changes[image_id] = {
                "status": JobStatus.FAILED,
                "error": f"{error.code}: {error.message}",
            }

        # in upload order: of two copies in one batch, dedup keeps the one uploaded first
        ordered = sorted(rows, key=lambda row: (row.created_at, row.id))
        results = await self._embed([row for row in ordered if row.id not in carried])
        embedded: list[tuple[ImageRow, EmbeddedImage]] = []
        for row in ordered:
            result = carried.get(row.id) or results[row.id]
            if isinstance(result, ImageFailure):
                fail(row.id, result.as_error())
            else:
                embedded.append((row, result))
        if not embedded:
            return changes
        relevance = await self._score(embedded)
        batch = DedupInsertBatch(
            items=[
                DedupInsertRequest(
                    id=row.id,
                    namespace=pipeline.dedup_namespace,
                    model=e.model,
                    vector=e.embedding,
                    phash=e.phash,
                    stored=True,  # uploads are stored before their job: dedup reads them by key
                )
                for row, e in embedded
            ]
        )
        try:
            inserted = (await self.dedup.insert_batch(batch)).results
        except ServiceError as exc:
            if isinstance(exc, UnavailableError):
                raise
            for row, _ in embedded:
                fail(row.id, exc)
            return changes
        for (row, e), outcome in zip(embedded, inserted, strict=True):
            duplicate_of = outcome.duplicate_of.id if outcome.duplicate_of else None
            changes[row.id] = {
                "status": JobStatus.DONE,
                "phash": e.phash,
                "model": e.model,
                "duplicate_of": duplicate_of,
                "notes": None,
                "error": None,
                **relevance[row.id],
            }
        logger.info("pipeline batch of %d images done", len(embedded))
        return changes

    async def _embed(self, rows: list[ImageRow]) -> dict[str, EmbeddedImage | ImageFailure]:
        """Each image's embedding, or why it has none, by image. By key: the embedder reads
        the stored bytes itself (the same storage setting), so they never travel through this
        process (a missing object is that image's failure)."""
        if not rows:
            return {}
        results: Sequence[EmbeddedImage | ImageFailure]
        try:
            results = await self.embedder.embed([ImageInput(key=row.id) for row in rows])
        except ServiceError as exc:
            if isinstance(exc, UnavailableError):
                raise
            results = ImageFailure.each_of(exc, len(rows))  # no image could be embedded
        return {row.id: result for row, result in zip(rows, results, strict=True)}

    async def _score(
        self, embedded: list[tuple[ImageRow, EmbeddedImage]]
    ) -> dict[str, dict[str, object]]:
        """The relevance fields of each image, by image, in one call per model: a single one,
        but while the embedder's default model changes, an embedding a job carried may be of
        the model before. Images the filter cannot score are kept, unscored, and say why (no
        usable reference set yet, or one of another model)."""
        by_model: dict[str, list[tuple[ImageRow, EmbeddedImage]]] = {}
        for row, e in embedded:
            by_model.setdefault(e.model, []).append((row, e))
        relevance: dict[str, dict[str, object]] = {}
        for model, group in by_model.items():
            try:
                scored = await self.filter.score(
                    self.settings.pipeline.reference_set, [e.embedding for _, e in group], model
                )
            except ServiceError as exc:
                if isinstance(exc, UnavailableError):
                    raise
                for row, _ in group:
                    relevance[row.id] = {
                        "notes": f"relevance not scored: {exc.code}: {exc.message}"
                    }
                continue
            for (row, _), r in zip(group, scored.results, strict=True):
                relevance[row.id] = {
                    "score": r.score,
                    "tier": r.tier,
                    "reference_set": scored.set,
                    "tier_source": r.tier_source,
                    "tiers_version": r.tiers_version,
                    "accepted": r.accepted,
                    "best_country": r.best_country,
                    "country_scores": json.dumps(r.country_scores) if r.country_scores else None,
                }
        return relevance
