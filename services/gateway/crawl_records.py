"""Record access for crawls: making one with its shards, and reading its progress back as the
paper's table (tier, count, share) with throughput and ETA."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence

from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from services.common.database import as_utc, session_scope
from services.common.schemas import Tier
from services.common.states import FINISHED, JobStatus
from services.gateway.crawl_sources import ShardRef
from services.gateway.schemas import CrawlOut, ImageCounts, KeepPolicy, ShardCounts, TierCount
from services.gateway.tables import CrawlRow, CrawlShardRow

TIER_ORDER = [tier.value for tier in Tier]


def create_crawl(
    engine: Engine,
    *,
    source: str,
    shards: Sequence[ShardRef],
    reference_set: str,
    keep: KeepPolicy,
    rho: float | None,
    namespace: str,
    caption_language: str | None,
    created_by: int | None,
) -> CrawlOut:
    """The crawl and its shards, queued, in one transaction."""
    crawl = CrawlRow(
        id=uuid.uuid4().hex,
        source=source,
        reference_set=reference_set,
        keep=keep.value,
        rho=rho,
        namespace=namespace,
        caption_language=caption_language,
        shards_total=len(shards),
        bytes_total=sum(shard.size_bytes for shard in shards),
        created_by=created_by,
    )
    rows = [
        CrawlShardRow(
            crawl_id=crawl.id,
            name=shard.name,
            kind=shard.kind.value,
            fingerprint=shard.fingerprint,
            size_bytes=shard.size_bytes,
        )
        for shard in shards
    ]
    with session_scope(engine) as session:
        session.add(crawl)
        session.flush()
        session.add_all(rows)
    return summarize(crawl, rows)


def unfinished_shards(engine: Engine, crawl_id: str | None = None) -> list[tuple[str, str]]:
    """(crawl, shard) of every shard not finished (in-process jobs restart with these)."""
    query = select(CrawlShardRow.crawl_id, CrawlShardRow.name).where(
        col(CrawlShardRow.status).not_in(FINISHED)
    )
    if crawl_id is not None:
        query = query.where(CrawlShardRow.crawl_id == crawl_id)
    with session_scope(engine) as session:
        return [(c, n) for c, n in session.exec(query).all()]


def crawl(engine: Engine, crawl_id: str) -> CrawlOut | None:
    with session_scope(engine) as session:
        row = session.get(CrawlRow, crawl_id)
        if row is None:
            return None
        shards = session.exec(select(CrawlShardRow).where(CrawlShardRow.crawl_id == crawl_id)).all()
        return summarize(row, shards)


def crawls(engine: Engine, limit: int, offset: int) -> tuple[list[CrawlOut], int]:
    """The newest first."""
    with session_scope(engine) as session:
        total = session.exec(select(func.count()).select_from(CrawlRow)).one()
        rows = session.exec(
            select(CrawlRow)
            .order_by(col(CrawlRow.created_at).desc(), col(CrawlRow.id))
            .limit(limit)
            .offset(offset)
        ).all()
        by_crawl: dict[str, list[CrawlShardRow]] = {row.id: [] for row in rows}
        if by_crawl:
            for shard in session.exec(
                select(CrawlShardRow).where(col(CrawlShardRow.crawl_id).in_(list(by_crawl)))
            ).all():
                by_crawl[shard.crawl_id].append(shard)
        return [summarize(row, by_crawl[row.id]) for row in rows], int(total)


def queued_shards(engine: Engine) -> int:
    """Shards waiting or running, over every crawl (what crawl workers scale on)."""
    with session_scope(engine) as session:
        return int(
            session.exec(
                select(func.count())
                .select_from(CrawlShardRow)
                .where(col(CrawlShardRow.status).not_in(FINISHED))
            ).one()
        )


def _status(shards: Sequence[CrawlShardRow]) -> JobStatus:
    statuses = Counter(shard.status for shard in shards)
    if statuses[JobStatus.QUEUED] == len(shards):
        return JobStatus.QUEUED
    if sum(statuses[s] for s in FINISHED) < len(shards):
        return JobStatus.PROCESSING
    return JobStatus.FAILED if statuses[JobStatus.FAILED] else JobStatus.DONE


def summarize(row: CrawlRow, shards: Sequence[CrawlShardRow]) -> CrawlOut:
    """The crawl's progress from its shards' counts."""
    tiers: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for shard in shards:
        tiers.update(json.loads(shard.tiers))
        failures.update(json.loads(shard.failures))
    scored = sum(tiers.values())
    statuses = Counter(shard.status for shard in shards)
    status = _status(shards) if shards else JobStatus.DONE
    started = [s.started_at for s in shards if s.started_at is not None and s.reused_from is None]
    ended = [s.updated_at for s in shards if s.started_at is not None and s.reused_from is None]
    seen_here = sum(s.seen for s in shards if s.reused_from is None)
    rate: float | None = None
    eta: float | None = None
    if started:
        elapsed = (as_utc(max(ended)) - as_utc(min(started))).total_seconds()
        if elapsed > 0:
            rate = seen_here / elapsed
            done_bytes = sum(
                s.size_bytes for s in shards if s.status in FINISHED and s.reused_from is None
            )
            left = sum(s.size_bytes for s in shards if s.status not in FINISHED)
            if not left:
                eta = 0.0
            elif done_bytes:
                eta = elapsed * left / done_bytes
    finished = [s.finished_at for s in shards if s.finished_at is not None]
    return CrawlOut(
        id=row.id,
        source=row.source,
        reference_set=row.reference_set,
        keep=KeepPolicy(row.keep),
        rho=row.rho,
        namespace=row.namespace,
        caption_language=row.caption_language,
        status=status,
        shards=ShardCounts(
            total=row.shards_total,
            queued=statuses[JobStatus.QUEUED],
            processing=statuses[JobStatus.PROCESSING],
            done=statuses[JobStatus.DONE],
            failed=statuses[JobStatus.FAILED],
        ),
        images=ImageCounts(
            seen=sum(s.seen for s in shards),
            accepted=sum(s.accepted for s in shards),
            rejected=sum(s.rejected for s in shards),
            duplicates=sum(s.duplicates for s in shards),
            failed=sum(s.failed for s in shards),
            stored=sum(s.stored for s in shards),
        ),
        tiers=[
            TierCount(tier=tier, count=tiers[tier], share=tiers[tier] / scored)
            for tier in sorted(tiers, key=_tier_rank)
        ],
        failures=dict(failures.most_common()),
        images_per_second=rate,
        eta_seconds=eta,
        created_at=row.created_at,
        finished_at=max(finished) if finished and status in FINISHED else None,
    )


def _tier_rank(tier: str) -> int:
    return TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER)
