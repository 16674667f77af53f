"""Crawl ingest: an img2dataset output read shard by shard, each shard one job.

A shard's images go through in batches straight to the embedder, the filter and dedup (one
call per service per batch, as uploads' pipeline does); the kept ones are stored and recorded
as images of source "crawl", the rest leave a small row. A shard's counts are set, never added
to: a try run again (its worker was killed, a dependency was down) counts from zero and writes
the same rows, so nothing is counted twice. A shard whose source and fingerprint a finished
shard of an earlier crawl had is not read again: its counts are taken over.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from services.common.captions import caption_language
from services.common.database import session_scope, utcnow
from services.common.errors import ServiceError, UnavailableError
from services.common.schemas import (
    DedupInsertBatch,
    DedupInsertRequest,
    EmbeddedImage,
    ImageFailure,
    ImageInput,
)
from services.common.states import FINISHED, JobStatus
from services.gateway import records
from services.gateway.crawl_sources import (
    CrawlSample,
    SampleFailure,
    ShardKind,
    ShardRef,
    iter_samples,
)
from services.gateway.intake import AcceptedImage, accept
from services.gateway.jobs import CaptionJob
from services.gateway.pipeline import Pipeline
from services.gateway.privacy import Screening, screen
from services.gateway.schemas import ImageSource, KeepPolicy
from services.gateway.tables import CrawlRejectRow, CrawlRow, CrawlShardRow, ImageRow

logger = logging.getLogger(__name__)

# the counts a shard's row and a try share
COUNTS = ("seen", "accepted", "rejected", "duplicates", "failed", "stored")
MAX_REASONS = 50  # distinct failure reasons kept per shard; the rest are counted as "other"


class CaptionQueue(Protocol):
    """Where the captions of kept images go (the job queue)."""

    async def enqueue_caption(self, job: CaptionJob) -> None: ...


def shard_job_id(crawl_id: str, shard: str) -> str:
    return f"shard:{crawl_id}:{shard}"


@dataclass
class ShardCounts:
    """What one try of a shard has seen so far: seen = accepted + rejected + duplicates +
    failed (a duplicate of a kept image counts as a duplicate, whatever its score)."""

    seen: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    failed: int = 0
    stored: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    def fail(self, reason: str) -> None:
        self.failed += 1
        known = reason in self.failures or len(self.failures) < MAX_REASONS
        self.failures[reason if known else "other"] += 1

    def onto(self, row: CrawlShardRow) -> None:
        for name in COUNTS:
            setattr(row, name, getattr(self, name))
        row.tiers = json.dumps(dict(self.tiers), sort_keys=True)
        row.failures = json.dumps(dict(self.failures), sort_keys=True)
        row.updated_at = utcnow()


@dataclass
class _Scored:
    sample: CrawlSample
    image: AcceptedImage
    model: str
    phash: str
    embedding: list[float] | str
    score: float | None = None
    tier: str | None = None
    tier_source: str | None = None
    tiers_version: int | None = None
    accepted: bool = False
    best_country: str | None = None
    country_scores: dict[str, float] | None = None
    screening: Screening = field(default_factory=Screening.skipped)


def _take(
    samples: Iterator[CrawlSample | SampleFailure], count: int
) -> list[CrawlSample | SampleFailure]:
    return list(itertools.islice(samples, count))


@dataclass
class CrawlIngest:
    """Runs shard jobs with the pipeline's clients and store."""

    pipeline: Pipeline
    queue: CaptionQueue

    @property
    def _engine(self) -> Engine:
        return self.pipeline.engine

    async def run_shard(self, crawl_id: str, shard: str, attempt: int) -> str:
        """Ingests one shard; its status. Raises `UnavailableError` to be tried again later."""
        claimed = await asyncio.to_thread(self._claim, crawl_id, shard, attempt)
        if isinstance(claimed, str):
            return claimed
        crawl, ref = claimed
        counts = ShardCounts()
        settings = self.pipeline.settings
        s3 = settings.storage.s3
        samples = iter_samples(ref, s3, settings.crawl.folder_shard_size)
        try:
            while batch := await asyncio.to_thread(_take, samples, settings.crawl.batch_size):
                await self._ingest_batch(crawl, shard, batch, counts)
                await asyncio.to_thread(self._progress, crawl_id, shard, counts, None)
        finally:
            close = getattr(samples, "close", None)
            if close is not None:
                await asyncio.to_thread(close)
        await asyncio.to_thread(self._progress, crawl_id, shard, counts, JobStatus.DONE)
        logger.info("crawl %s, shard %s: %d images seen", crawl_id, shard, counts.seen)
        return JobStatus.DONE

    def stop(self, crawl_id: str, shard: str, final: bool, reason: str) -> str:
        """A try stopped from outside: the shard waits for the next one, or fails."""
        status = JobStatus.FAILED if final else JobStatus.QUEUED
        with session_scope(self._engine) as session:
            row = session.get(CrawlShardRow, (crawl_id, shard))
            if row is None or row.status in FINISHED:
                return row.status if row is not None else JobStatus.FAILED
            row.status, row.error, row.updated_at = status, reason, utcnow()
            if final:
                row.finished_at = utcnow()
        return status

    def _claim(self, crawl_id: str, shard: str, attempt: int) -> str | tuple[CrawlRow, ShardRef]:
        """The crawl and the shard to read, marked processing; or the status of a shard with
        nothing to do (finished, or taken over from an earlier crawl's finished twin)."""
        with session_scope(self._engine) as session:
            crawl = session.get(CrawlRow, crawl_id)
            row = session.get(CrawlShardRow, (crawl_id, shard))
            if crawl is None or row is None:
                return JobStatus.FAILED
            if row.status in FINISHED:
                return row.status
            twin = session.exec(
                select(CrawlShardRow)
                .join(CrawlRow, col(CrawlRow.id) == col(CrawlShardRow.crawl_id))
                .where(CrawlShardRow.fingerprint == row.fingerprint)
                .where(CrawlShardRow.name == row.name)
                .where(CrawlRow.source == crawl.source)
                .where(CrawlShardRow.status == JobStatus.DONE)
                .where(col(CrawlShardRow.reused_from).is_(None))
                .where(CrawlShardRow.crawl_id != crawl_id)
            ).first()
            now = utcnow()
            if twin is not None:
                for name in COUNTS:
                    setattr(row, name, getattr(twin, name))
                row.tiers, row.failures, row.reused_from = twin.tiers, twin.failures, twin.crawl_id
                row.status, row.finished_at, row.updated_at = JobStatus.DONE, now, now
                return JobStatus.DONE
            row.status, row.attempts, row.error = JobStatus.PROCESSING, attempt, None
            row.started_at = row.started_at or now
            row.updated_at = now
            ref = ShardRef(
                source=crawl.source,
                name=row.name,
                kind=ShardKind(row.kind),
                size_bytes=row.size_bytes,
                fingerprint=row.fingerprint,
            )
            session.expunge(crawl)
        return crawl, ref

    def _progress(
        self, crawl_id: str, shard: str, counts: ShardCounts, status: JobStatus | None
    ) -> None:
        with session_scope(self._engine) as session:
            row = session.get(CrawlShardRow, (crawl_id, shard))
            if row is None or row.status in FINISHED:
                return  # stopped from outside meanwhile: its end stays
            counts.onto(row)
            if status is not None:
                row.status, row.finished_at = status, utcnow()

    async def _ingest_batch(
        self,
        crawl: CrawlRow,
        shard: str,
        batch: Sequence[CrawlSample | SampleFailure],
        counts: ShardCounts,
    ) -> None:
        limits = self.pipeline.settings.images
        samples: list[CrawlSample] = []
        for read in batch:
            counts.seen += 1
            if isinstance(read, SampleFailure):
                counts.fail(read.reason)
            else:
                samples.append(read)

        def accept_all() -> list[AcceptedImage | ServiceError]:
            out: list[AcceptedImage | ServiceError] = []
            for sample in samples:
                try:
                    out.append(accept(sample.data, limits))
                except ServiceError as exc:
                    out.append(exc)
            return out

        accepted_images = await asyncio.to_thread(accept_all)
        valid: list[tuple[CrawlSample, AcceptedImage]] = []
        for sample, image in zip(samples, accepted_images, strict=True):
            if isinstance(image, ServiceError):
                counts.fail(f"{image.code}: {image.message}")
            else:
                valid.append((sample, image))
        if not valid:
            return
        scored = await self._embed_and_score(crawl, valid, counts)
        to_keep = [s for s in scored if s.accepted or crawl.keep == KeepPolicy.ALL]
        kept = await self._screen(to_keep, counts)
        unscreened = {id(s) for s in to_keep} - {id(s) for s in kept}  # failed: counted so
        scored = [s for s in scored if id(s) not in unscreened]
        # bytes before dedup: it reads them by key to check near candidates on their pixels
        await asyncio.to_thread(self._store, kept)
        duplicates: dict[str, str | None] = {}
        refused: str | None = None
        try:
            duplicates = await self._insert_unique(crawl, kept)
        except UnavailableError:
            raise  # down: the shard is tried again later, as when another service is
        except ServiceError as exc:
            # refused for good: the kept images are recorded failed with the reason, as an
            # upload's are, so that their stored bytes have a record, and the shard goes on
            refused = f"dedup: {exc.code}: {exc.message}"
        captions = await asyncio.to_thread(
            self._store_and_record, crawl, shard, scored, kept, duplicates, refused
        )
        for job in captions:
            await self.queue.enqueue_caption(job)
        kept_ids = {id(item) for item in kept}
        for item in scored:  # each image in one count: failed, a duplicate, accepted or not
            if item.tier is not None:
                counts.tiers[item.tier] += 1
            if refused is not None and id(item) in kept_ids:
                counts.fail(refused)
            elif duplicates.get(item.image.sha256):
                counts.duplicates += 1
            elif item.accepted:
                counts.accepted += 1
            else:
                counts.rejected += 1
        counts.stored += len(kept)

    async def _embed_and_score(
        self,
        crawl: CrawlRow,
        valid: list[tuple[CrawlSample, AcceptedImage]],
        counts: ShardCounts,
    ) -> list[_Scored]:
        results: Sequence[EmbeddedImage | ImageFailure]
        try:
            results = await self.pipeline.embedder.embed(
                [ImageInput.of_bytes(image.data) for _, image in valid]
            )
        except UnavailableError:
            raise
        except ServiceError as exc:
            results = ImageFailure.each_of(exc, len(valid))
        scored: list[_Scored] = []
        for (sample, image), result in zip(valid, results, strict=True):
            if isinstance(result, ImageFailure):
                error = result.as_error()
                counts.fail(f"{error.code}: {error.message}")
            else:
                scored.append(_Scored(sample, image, result.model, result.phash, result.embedding))
        if not scored:
            return scored
        # observed: a crawl's scores are the background its set's `shares` tiers settle on
        answer = await self.pipeline.filter.score(
            crawl.reference_set, [s.embedding for s in scored], scored[0].model, observe=True
        )
        for item, relevance in zip(scored, answer.results, strict=True):
            item.score, item.tier = relevance.score, relevance.tier
            item.tier_source, item.tiers_version = relevance.tier_source, relevance.tiers_version
            item.best_country, item.country_scores = (
                relevance.best_country,
                relevance.country_scores,
            )
            item.accepted = (
                relevance.accepted if crawl.rho is None else relevance.score >= crawl.rho
            )
        return scored

    async def _screen(self, kept: list[_Scored], counts: ShardCounts) -> list[_Scored]:
        """The images to keep as they are to be stored: faces and plates blurred (an upload's
        pass, services/gateway/privacy.py); one the embedder cannot read is counted failed."""
        if not kept:
            return kept
        settings = self.pipeline.settings
        outcomes = await screen(
            [s.image for s in kept],
            self.pipeline.embedder,
            settings.privacy,
            settings.safety,
        )
        screened: list[_Scored] = []
        for item, outcome in zip(kept, outcomes, strict=True):
            if isinstance(outcome, ServiceError):
                counts.fail(f"{outcome.code}: {outcome.message}")
                continue
            item.image, item.screening = outcome
            screened.append(item)
        return screened

    async def _insert_unique(self, crawl: CrawlRow, kept: list[_Scored]) -> dict[str, str | None]:
        """Dedup's insert-if-unique for the kept images: sha256 → the image it duplicates."""
        if not kept:
            return {}
        batch = DedupInsertBatch(
            items=[
                DedupInsertRequest(
                    id=s.image.sha256,
                    namespace=crawl.namespace,
                    model=s.model,
                    vector=s.embedding,
                    phash=s.phash,
                    stored=True,
                )
                for s in kept
            ]
        )
        results = (await self.pipeline.dedup.insert_batch(batch)).results
        return {
            s.image.sha256: (r.duplicate_of.id if r.duplicate_of else None)
            for s, r in zip(kept, results, strict=True)
        }

    def _store(self, kept: list[_Scored]) -> None:
        for item in kept:
            self.pipeline.store.put(item.image.sha256, item.image.data)

    def _store_and_record(
        self,
        crawl: CrawlRow,
        shard: str,
        scored: list[_Scored],
        kept: list[_Scored],
        duplicates: dict[str, str | None],
        refused: str | None = None,
    ) -> list[CaptionJob]:
        """The kept images' records (their bytes were stored before dedup; failed with the
        reason dedup `refused` them for), the others' small rows. Rows a killed try wrote are
        written again, the same. The captions to start: one per kept image that is not a
        duplicate nor failed, when the crawl asks for them."""
        language = caption_language(crawl.caption_language) if crawl.caption_language else None
        captions: list[CaptionJob] = []
        kept_ids = {id(item) for item in kept}
        with session_scope(self._engine) as session:
            # what an earlier try (or an upload) wrote, in two queries for the batch instead
            # of a lookup per row; a row written again is merged, a new one added
            stored = {
                row.id: row
                for row in session.exec(
                    select(ImageRow).where(col(ImageRow.id).in_([i.image.sha256 for i in kept]))
                ).all()
            }
            rejected = {
                row.sample_key
                for row in session.exec(
                    select(CrawlRejectRow)
                    .where(CrawlRejectRow.crawl_id == crawl.id)
                    .where(CrawlRejectRow.shard == shard)
                    .where(col(CrawlRejectRow.sample_key).in_([i.sample.key for i in scored]))
                ).all()
            }
            for item in scored:
                sample = item.sample
                if id(item) not in kept_ids:
                    write = session.merge if sample.key in rejected else session.add
                    rejected.add(sample.key)
                    write(
                        CrawlRejectRow(
                            crawl_id=crawl.id,
                            shard=shard,
                            sample_key=sample.key,
                            sha256=item.image.sha256,
                            url=sample.url,
                            score=item.score,
                            tier=item.tier,
                        )
                    )
                    continue
                existing = stored.get(item.image.sha256)
                if existing is not None and existing.crawl_id != crawl.id:
                    continue  # the same bytes, uploaded or crawled before: that record stays
                info = item.image.info
                row = ImageRow(
                    id=item.image.sha256,
                    status=JobStatus.DONE if refused is None else JobStatus.FAILED,
                    error=refused,
                    format=info.format,
                    size_bytes=len(item.image.data),
                    width=info.width,
                    height=info.height,
                    phash=item.phash,
                    model=item.model,
                    score=item.score,
                    tier=item.tier,
                    reference_set=crawl.reference_set,
                    tier_source=item.tier_source,
                    tiers_version=item.tiers_version,
                    accepted=item.accepted,
                    best_country=item.best_country,
                    country_scores=json.dumps(item.country_scores) if item.country_scores else None,
                    duplicate_of=duplicates.get(item.image.sha256),
                    want_caption=crawl.caption_language is not None,
                    source=ImageSource.CRAWL,
                    crawl_id=crawl.id,
                    shard=shard,
                    sample_key=sample.key,
                    url=sample.url,
                    alt_text=sample.caption,
                    original_width=sample.original_width,
                    original_height=sample.original_height,
                    license=_license(sample),
                )
                item.screening.mark(row)
                if existing is None:
                    session.add(row)
                    stored[row.id] = row
                else:  # written by an earlier try, or earlier in this batch (the same bytes)
                    stored[row.id] = session.merge(row)
                if (
                    language is not None
                    and refused is None
                    and duplicates.get(item.image.sha256) is None
                ):
                    session.flush()
                    asked = records.ask_caption(session, item.image.sha256, language, None, False)
                    if asked is not None:
                        captions.append(records.job_of(asked))
        return captions


def _license(sample: CrawlSample) -> str | None:
    """The licence img2dataset recorded for the page, when it did."""
    value = sample.meta.get("license") or sample.meta.get("LICENSE")
    return str(value) if value else None
