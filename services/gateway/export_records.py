"""Record access for exports: the export rows, and the processed images an export holds read
page by page (by id, so a page never shifts while rows are added) as dataset records."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from services.common.database import session_scope, utcnow
from services.common.schemas import Tier
from services.common.states import JobStatus
from services.gateway.dataset_writer import CaptionEntry, ExportRecord
from services.gateway.schemas import ExportFilters, ExportIn, ExportOut, ImageSource
from services.gateway.tables import CaptionRow, ExportRow, ImageRow

CROWD_LICENSE = "CC-BY-SA-4.0"  # what contributors agree to when they upload
UNKNOWN_LICENSE = "unknown: see the url"  # a crawled page that named none
PAGE = 500


def export_out(row: ExportRow) -> ExportOut:
    return ExportOut(
        id=row.id,
        destination=row.destination,
        filters=ExportFilters.model_validate_json(row.filters),
        records_per_shard=row.records_per_shard,
        status=JobStatus(row.status),
        total=row.total,
        written=row.written,
        shards=row.shards,
        size_bytes=row.size_bytes,
        summary=json.loads(row.summary) if row.summary else None,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def create_export(engine: Engine, request: ExportIn, created_by: int | None) -> ExportOut:
    row = ExportRow(
        id=uuid.uuid4().hex,
        destination=request.destination,
        filters=request.filters.model_dump_json(),
        records_per_shard=request.records_per_shard,
        created_by=created_by,
    )
    with session_scope(engine) as session:
        session.add(row)
    return export_out(row)


def export(engine: Engine, export_id: str) -> ExportOut | None:
    with session_scope(engine) as session:
        row = session.get(ExportRow, export_id)
        return export_out(row) if row is not None else None


def exports(engine: Engine, limit: int, offset: int) -> tuple[list[ExportOut], int]:
    with session_scope(engine) as session:
        total = session.exec(select(func.count()).select_from(ExportRow)).one()
        rows = session.exec(
            select(ExportRow)
            .order_by(col(ExportRow.created_at).desc(), col(ExportRow.id))
            .limit(limit)
            .offset(offset)
        ).all()
        return [export_out(row) for row in rows], int(total)


def unfinished_exports(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(ExportRow.id).where(
                    col(ExportRow.status).in_([JobStatus.QUEUED, JobStatus.PROCESSING])
                )
            ).all()
        )


def update(engine: Engine, export_id: str, **changes: Any) -> ExportRow | None:
    """Writes `changes` on the export; None when it is gone."""
    with session_scope(engine) as session:
        row = session.get(ExportRow, export_id)
        if row is None:
            return None
        for name, value in changes.items():
            setattr(row, name, value)
        session.add(row)
        return row


def _matching(filters: ExportFilters) -> SelectOfScalar[ImageRow]:
    query = select(ImageRow).where(ImageRow.status == JobStatus.DONE)
    if filters.sources is not None:
        query = query.where(col(ImageRow.source).in_([s.value for s in filters.sources]))
    if filters.min_tier is not None:
        tiers = list(Tier)
        allowed = [t.value for t in tiers[tiers.index(filters.min_tier) :]]
        query = query.where(col(ImageRow.tier).in_(allowed))
    if filters.accepted_only:
        query = query.where(col(ImageRow.accepted).is_(True))
    if filters.min_reviews is not None:
        query = query.where(col(ImageRow.review_count) >= filters.min_reviews)
    if filters.countries is not None:
        codes = [c.value for c in filters.countries]
        query = query.where(
            or_(
                col(ImageRow.best_country).in_(codes),
                *(col(ImageRow.countries).contains(f",{code},") for code in codes),
            )
        )
    if not filters.duplicates:
        query = query.where(col(ImageRow.duplicate_of).is_(None))
    return query.where(col(ImageRow.held).is_(False))  # held as unsafe: never exported


def count_matching(engine: Engine, filters: ExportFilters) -> int:
    with session_scope(engine) as session:
        subquery = _matching(filters).subquery()
        return int(session.exec(select(func.count()).select_from(subquery)).one())


def matching_pages(engine: Engine, filters: ExportFilters) -> Iterator[list[ExportRecord]]:
    """The export's records, a page at a time, in id order."""
    after = ""
    while True:
        with session_scope(engine) as session:
            rows = session.exec(
                _matching(filters)
                .where(col(ImageRow.id) > after)
                .order_by(col(ImageRow.id))
                .limit(PAGE)
            ).all()
            if not rows:
                return
            captions = _captions(session, [row.id for row in rows], filters)
        yield [record_of(row, captions.get(row.id, [])) for row in rows]
        after = rows[-1].id


def _captions(
    session: Session, image_ids: Sequence[str], filters: ExportFilters
) -> dict[str, list[CaptionRow]]:
    query = (
        select(CaptionRow)
        .where(col(CaptionRow.image_id).in_(list(image_ids)))
        .where(CaptionRow.status == JobStatus.DONE)
        .order_by(col(CaptionRow.language))
    )
    if filters.caption_languages is not None:
        query = query.where(
            col(CaptionRow.language).in_([lang.value for lang in filters.caption_languages])
        )
    found: dict[str, list[CaptionRow]] = {}
    for caption in session.exec(query).all():
        found.setdefault(caption.image_id, []).append(caption)
    return found


def record_of(row: ImageRow, captions: Sequence[CaptionRow]) -> ExportRecord:
    """An image row as a dataset record; the licence is the crowd's or the crawled page's."""
    crowd = row.source == ImageSource.CROWD
    return ExportRecord(
        key=row.id,
        sha256=row.id,
        format=row.format,
        source=row.source,
        url=row.url,
        caption_en=row.caption_en if crowd else (row.caption_en or row.alt_text),
        caption_native=row.caption_native,
        captions=tuple(
            CaptionEntry(
                language=c.language,
                text=c.caption or "",
                backend=c.backend,
                model=c.model,
                language_ok=c.language_ok,
            )
            for c in captions
            if c.caption
        ),
        countries=tuple(c for c in row.countries.split(",") if c),
        best_country=row.best_country,
        country_scores=json.loads(row.country_scores) if row.country_scores else {},
        score=row.score,
        tier=row.tier,
        accepted=row.accepted,
        duplicate_of=row.duplicate_of,
        width=row.width,
        height=row.height,
        location=row.location,
        native_language=row.native_language,
        license=CROWD_LICENSE if crowd else (row.license or UNKNOWN_LICENSE),
        category=row.category,
        review_count=row.review_count,
        flag_quality=row.flag_quality,
        flag_caption_fit=row.flag_caption_fit,
        flag_relevance=row.flag_relevance,
        flag_overall=row.flag_overall,
        faces=row.faces,
        plates=row.plates,
        blurred=row.blurred,
        unsafe_score=row.unsafe_score,
    )


def started(engine: Engine, export_id: str, attempt: int, total: int) -> ExportRow | None:
    return update(
        engine,
        export_id,
        status=JobStatus.PROCESSING,
        attempts=attempt,
        total=total,
        written=0,
        shards=0,
        started_at=utcnow(),
        error=None,
    )
