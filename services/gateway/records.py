"""Record access: every query and write of the gateway's image and caption rows.

The routes, the pipeline, the caption runner and the reconciler decide what happens; this is
the one place that says how it is read and written, so a rule about records (a record that has
ended is never written again, a caption asked again supersedes its older job) holds everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, bindparam, func, insert, or_, update
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common.captions import CaptionLanguage
from services.common.database import insert_if_new, session_scope, utcnow
from services.common.errors import ServiceError, UnavailableError
from services.common.schemas import Tier
from services.common.states import FINISHED, UNFINISHED, JobStatus
from services.gateway.jobs import CaptionJob, Processed
from services.gateway.points_rules import PointKind
from services.gateway.schemas import ImageSource
from services.gateway.tables import CaptionRow, CrawlRow, ImageRow, PointRow

# Captions


def captions_of(
    session: Session, image_ids: Sequence[str], status: JobStatus | None = None
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
    elif row.status == JobStatus.DONE and not redo:
        return None
    elif row.status != JobStatus.QUEUED:
        row.status, row.requests, row.error, row.attempts = (
            JobStatus.QUEUED,
            row.requests + 1,
            None,
            0,
        )
        row.location_aware = location_aware
        row.updated_at = utcnow()
    session.add(row)
    return row


@dataclass
class CaptionsAsked:
    queued: list[str]
    already_done: list[str]
    unknown: list[str]
    start: list[CaptionJob]  # of images already processed (the others' jobs queue theirs)


def ask_captions(
    engine: Engine,
    image_ids: Sequence[str],
    language: CaptionLanguage,
    location_aware: bool | None,
    redo: bool,
) -> CaptionsAsked:
    ids = list(dict.fromkeys(image_ids))
    asked = CaptionsAsked([], [], [], [])
    with session_scope(engine) as session:
        images = {
            row.id: row
            for row in session.exec(select(ImageRow).where(col(ImageRow.id).in_(ids))).all()
        }
        for image_id in ids:
            image = images.get(image_id)
            if image is None:
                asked.unknown.append(image_id)
                continue
            row = ask_caption(session, image_id, language, location_aware, redo)
            if row is None:
                asked.already_done.append(image_id)
                continue
            asked.queued.append(image_id)
            if image.status in FINISHED:
                asked.start.append(job_of(row))
    return asked


def pending_captions(engine: Engine) -> list[CaptionJob]:
    """Every queued caption whose image is processed (in-process jobs restart with these)."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(CaptionRow)
            .join(ImageRow, col(ImageRow.id) == col(CaptionRow.image_id))
            .where(CaptionRow.status == JobStatus.QUEUED)
            .where(col(ImageRow.status).in_(FINISHED))
        ).all()
    return [job_of(row) for row in rows]


def caption_job_records(engine: Engine, job: CaptionJob) -> tuple[ImageRow, CaptionRow] | None:
    """The image and caption a caption job works on; None when the caption was asked again
    since (a newer job runs it) or is gone."""
    with session_scope(engine) as session:
        image = session.get(ImageRow, job.image_id)
        caption = session.get(CaptionRow, (job.image_id, job.language))
    if image is None or caption is None or caption.requests != job.request:
        return None
    return image, caption


def update_caption(engine: Engine, job: CaptionJob, **fields: object) -> str | None:
    """Writes the job's caption unless it has ended (a try stopped from outside may still be
    running in its thread); its status after, None when it was asked again since."""
    with session_scope(engine) as session:
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


# Uploads


@dataclass
class Recorded:
    row: ImageRow
    created: bool
    captions: list[CaptionRow]
    captions_to_start: list[CaptionJob]  # asked now for an image already processed


def record_upload(engine: Engine, row: ImageRow, caption: CaptionLanguage | None) -> Recorded:
    """Inserts the record unless the same bytes were uploaded before, with the caption asked
    for, in one transaction. New bytes, the common case, take one plain INSERT each.

    A person's submission (`row.account_id`) of bytes someone else sent first is refused with
    409 `duplicate_submission`, and nothing of that record is shown."""
    with session_scope(engine) as session:
        connection = session.connection()
        new = insert_if_new(engine, ImageRow).returning(col(ImageRow.id))
        if connection.execute(new, row.model_dump()).first() is not None:
            asked = None if caption is None else CaptionRow(image_id=row.id, language=caption.value)
            if asked is not None:
                connection.execute(insert(CaptionRow), asked.model_dump())
            return Recorded(row, True, [asked] if asked is not None else [], [])
        existing = session.get(ImageRow, row.id)
        if existing is None:  # deleted between the two statements: no such thing here
            raise UnavailableError(f"the record of {row.id} could not be written; try again")
        if row.account_id is not None and existing.account_id != row.account_id:
            raise ServiceError(
                409,
                "duplicate_submission",
                "this image is in the collection already (sent by someone else)",
                field="image",
            )
        asked = None  # a caption this image already has, in any state, is left as it is
        if caption is not None and session.get(CaptionRow, (row.id, caption.value)) is None:
            asked = CaptionRow(image_id=row.id, language=caption.value)
            session.add(asked)
        session.flush()
        captions = captions_of(session, [row.id]).get(row.id, [])
        start = [job_of(asked)] if asked is not None and existing.status in FINISHED else []
    return Recorded(existing, False, captions, start)


def image(engine: Engine, image_id: str) -> ImageRow | None:
    with session_scope(engine) as session:
        return session.get(ImageRow, image_id)


@dataclass(frozen=True)
class Owner:
    """Whose a record is: a person's account, or (records from before accounts, and service
    keys) the key that uploaded it."""

    account_id: int | None
    key_id: int | None


@dataclass
class ImageRecord:
    """An image row with what its view shows beside it."""

    row: ImageRow
    captions: list[CaptionRow]
    points: float  # what the submission earned its contributor
    original_owner: Owner | None  # whose the image it duplicates is


def _records(session: Session, rows: Sequence[ImageRow]) -> list[ImageRecord]:
    ids = [r.id for r in rows]
    captions = captions_of(session, ids)
    points = dict(
        session.exec(
            select(PointRow.image_id, PointRow.points)
            .where(col(PointRow.image_id).in_(ids))
            .where(PointRow.kind == PointKind.SUBMISSION)
        ).all()
    )
    originals = {r.duplicate_of for r in rows if r.duplicate_of is not None}
    owners = {
        image_id: Owner(account_id, key_id)
        for image_id, account_id, key_id in session.exec(
            select(ImageRow.id, ImageRow.account_id, ImageRow.uploaded_by).where(
                col(ImageRow.id).in_(originals)
            )
        ).all()
    }
    return [
        ImageRecord(
            r,
            captions.get(r.id, []),
            points.get(r.id, 0.0),
            owners.get(r.duplicate_of) if r.duplicate_of else None,
        )
        for r in rows
    ]


def image_record(engine: Engine, image_id: str) -> ImageRecord | None:
    with session_scope(engine) as session:
        row = session.get(ImageRow, image_id)
        return None if row is None else _records(session, [row])[0]


class FlagValue(StrEnum):
    """A filter on a review flag: True, False, or None (not decided)."""

    TRUE = "true"
    FALSE = "false"
    NONE = "none"


@dataclass(frozen=True)
class ImageFilter:
    status: JobStatus | None = None
    tier: Tier | None = None
    country: str | None = None
    duplicate: bool | None = None
    owner: Owner | None = None  # only this owner's records
    category: str | None = None
    flags: Mapping[str, FlagValue] = field(default_factory=dict)  # column name → value
    min_reviews: int | None = None
    held: bool | None = None
    faces: bool | None = None  # with faces found (by the privacy pass), or without
    blurred: bool | None = None


@dataclass
class ImagePage:
    records: list[ImageRecord]
    total: int


def _flag_condition(column: str, value: FlagValue) -> ColumnElement[bool]:
    flag = getattr(ImageRow, column)
    if value == FlagValue.NONE:
        return col(flag).is_(None)
    return col(flag).is_(value == FlagValue.TRUE)


def image_page(engine: Engine, where: ImageFilter, limit: int, offset: int) -> ImagePage:
    """A page of images in upload order, with their captions and the count of all that match."""
    query = select(ImageRow)
    if where.status is not None:
        query = query.where(ImageRow.status == where.status)
    if where.tier is not None:
        query = query.where(ImageRow.tier == where.tier)
    if where.country is not None:
        query = query.where(col(ImageRow.countries).contains(f",{where.country},"))
    if where.duplicate is not None:
        query = query.where(ImageRow.status == JobStatus.DONE).where(
            col(ImageRow.duplicate_of).is_not(None)
            if where.duplicate
            else col(ImageRow.duplicate_of).is_(None)
        )
    if where.owner is not None:
        query = query.where(
            ImageRow.account_id == where.owner.account_id
            if where.owner.account_id is not None
            else ImageRow.uploaded_by == where.owner.key_id
        )
    if where.category is not None:
        query = query.where(ImageRow.category == where.category)
    for column, value in where.flags.items():
        query = query.where(_flag_condition(column, value))
    if where.min_reviews is not None:
        query = query.where(col(ImageRow.review_count) >= where.min_reviews)
    if where.held is not None:
        query = query.where(col(ImageRow.held).is_(where.held))
    if where.faces is not None:
        query = query.where(col(ImageRow.faces) > 0 if where.faces else col(ImageRow.faces) == 0)
    if where.blurred is not None:
        query = query.where(col(ImageRow.blurred).is_(where.blurred))
    with session_scope(engine) as session:
        total = session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = session.exec(
            query.order_by(col(ImageRow.created_at), col(ImageRow.id)).offset(offset).limit(limit)
        ).all()
        return ImagePage(_records(session, rows), int(total))


def unfinished_images(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        rows = session.exec(select(ImageRow.id).where(col(ImageRow.status).in_(UNFINISHED))).all()
    return list(rows)


# The pipeline

Changes = dict[str, dict[str, object]]


def write_changes(
    session: Session, changes: Changes, claimed: Mapping[str, int] | None = None
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


def processed(session: Session, statuses: dict[str, str]) -> dict[str, Processed]:
    """Each image's status, with the captions waiting for those whose processing ended."""
    ended = [image_id for image_id, status in statuses.items() if status in FINISHED]
    waiting = captions_of(session, ended, status=JobStatus.QUEUED) if ended else {}
    return {
        image_id: Processed(status, tuple(job_of(row) for row in waiting.get(image_id, ())))
        for image_id, status in statuses.items()
    }


def claim(engine: Engine, attempts: Mapping[str, int]) -> dict[str, ImageRow]:
    """Loads the records of a batch (image id → the try that runs it) and marks the ones not
    ended "processing" by that try, in one transaction; returns every record found, as
    read-only snapshots taken before the change."""
    with session_scope(engine) as session:
        rows = {
            row.id: row
            for row in session.exec(
                select(ImageRow).where(col(ImageRow.id).in_(list(attempts)))
            ).all()
        }
        session.expunge_all()
        write_changes(
            session,
            {
                image_id: {"status": JobStatus.PROCESSING, "attempts": attempts[image_id]}
                for image_id, row in rows.items()
                if row.status not in FINISHED
            },
        )
    return rows


def finish(
    engine: Engine, changes: Changes, claimed: Mapping[str, int], statuses: dict[str, str]
) -> dict[str, Processed]:
    """Writes a batch's results (only where its try still holds the record) and returns each
    image's outcome with the captions that can start."""
    with session_scope(engine) as session:
        write_changes(session, changes, claimed)
        return processed(session, statuses)


def stop_image(engine: Engine, image_id: str, change: dict[str, object]) -> Processed | str | None:
    """A try stopped from outside: writes `change` unless the record ended; returns the outcome
    when it has ended, the status when it waits for another try, None when it is gone."""
    with session_scope(engine) as session:
        write_changes(session, {image_id: change})
        row = session.get(ImageRow, image_id)
        if row is None:
            return None
        if row.status not in FINISHED:
            return row.status
        return processed(session, {row.id: row.status})[row.id]


# The reconciler


@dataclass(frozen=True)
class Stuck:
    """A record not ended and unchanged since a time, with its job."""

    image_id: str
    tries: int
    caption: CaptionJob | None = None


def stuck_since(engine: Engine, before: datetime) -> list[Stuck]:
    """Images queued or processing, and captions queued whose image ended, unchanged since
    `before`."""
    with session_scope(engine) as session:
        images = session.exec(
            select(ImageRow.id, ImageRow.attempts)
            .where(col(ImageRow.status).in_(UNFINISHED))
            .where(col(ImageRow.updated_at) <= before)
        ).all()
        captions = session.exec(
            select(CaptionRow)
            .join(ImageRow, col(ImageRow.id) == col(CaptionRow.image_id))
            .where(CaptionRow.status == JobStatus.QUEUED)
            .where(col(ImageRow.status).in_(FINISHED))
            .where(col(CaptionRow.updated_at) <= before)
            .where(col(ImageRow.updated_at) <= before)
        ).all()
        found = [Stuck(image_id, tries) for image_id, tries in images]
        found += [Stuck(row.image_id, row.attempts, job_of(row)) for row in captions]
    return found


def fail_stuck(engine: Engine, stuck: Stuck, error: str) -> None:
    """Records a lost job failed, unless its record ended or was asked again meanwhile."""
    with session_scope(engine) as session:
        row: ImageRow | CaptionRow | None
        if stuck.caption is None:
            row = session.get(ImageRow, stuck.image_id)
        else:
            row = session.get(CaptionRow, (stuck.image_id, stuck.caption.language))
            if row is not None and row.requests != stuck.caption.request:
                return  # asked again since: a newer job runs it
        if row is None or row.status in FINISHED:
            return
        row.status, row.error, row.updated_at = JobStatus.FAILED, error, utcnow()
        session.add(row)


def _in_dedup_namespace(namespace: str, crowd_namespace: str) -> ColumnElement[bool]:
    """The records the pipeline or a crawl inserted into dedup's `namespace`: done uploads
    (when it is the pipeline's namespace) and the kept images of crawls into it."""
    crawled = col(ImageRow.crawl_id).in_(select(CrawlRow.id).where(CrawlRow.namespace == namespace))
    crowd = col(ImageRow.source) == ImageSource.CROWD
    inserted = or_(crowd, crawled) if namespace == crowd_namespace else crawled
    return and_(col(ImageRow.status) == JobStatus.DONE, inserted)


def count_in_dedup_namespace(engine: Engine, namespace: str, crowd_namespace: str) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(ImageRow)
        return int(session.exec(query.where(_in_dedup_namespace(namespace, crowd_namespace))).one())


@dataclass(frozen=True)
class UploadPosition:
    """Where a walk in upload order (created_at, then id) has got to."""

    created_at: datetime
    image_id: str


def in_dedup_namespace_after(
    engine: Engine,
    namespace: str,
    crowd_namespace: str,
    after: UploadPosition | None,
    limit: int,
) -> list[UploadPosition]:
    """The next `limit` records of the namespace in upload order (as the pipeline inserted
    them: of two copies, the one uploaded first is kept)."""
    query = select(ImageRow.created_at, ImageRow.id).where(
        _in_dedup_namespace(namespace, crowd_namespace)
    )
    if after is not None:
        query = query.where(
            or_(
                col(ImageRow.created_at) > after.created_at,
                and_(
                    col(ImageRow.created_at) == after.created_at,
                    col(ImageRow.id) > after.image_id,
                ),
            )
        )
    query = query.order_by(col(ImageRow.created_at), col(ImageRow.id)).limit(limit)
    with Session(engine) as session:
        return [UploadPosition(when, image_id) for when, image_id in session.exec(query)]


def duplicates_of(engine: Engine, image_ids: list[str]) -> dict[str, str | None]:
    with Session(engine) as session:
        query = select(ImageRow.id, ImageRow.duplicate_of).where(col(ImageRow.id).in_(image_ids))
        return dict(session.exec(query).all())


def set_duplicates(engine: Engine, duplicates: Mapping[str, str | None]) -> None:
    """The `duplicate_of` of done records, as a rebuilt dedup store decided it."""
    if not duplicates:
        return
    statement = (
        update(ImageRow)
        .where(col(ImageRow.id) == bindparam("image_id"))
        .where(col(ImageRow.status) == JobStatus.DONE)
        .values(duplicate_of=bindparam("original"), updated_at=bindparam("now"))
    )
    now = utcnow()
    with session_scope(engine) as session:
        session.connection().execute(
            statement,
            [{"image_id": i, "original": o, "now": now} for i, o in duplicates.items()],
        )


# ---- re-tiering (`seavl tiers retier`)
@dataclass(frozen=True)
class TieredScore:
    """What re-tiering a record needs: its score, and whether its verdict is the filter's to
    change (not reviewed by people yet, not of a crawl that set its own ρ)."""

    image_id: str
    score: float
    tier: str | None
    accepted: bool | None
    verdict_is_the_filters: bool


def _tiered_by_an_older_version(reference_set: str, version: int) -> ColumnElement[bool]:
    """Records of the set tiered before `version` (versions only grow: one tiered by a newer
    version, as a crawl refits the boundaries meanwhile, is left as it is)."""
    return and_(
        col(ImageRow.reference_set) == reference_set,
        col(ImageRow.score).is_not(None),
        or_(col(ImageRow.tiers_version).is_(None), col(ImageRow.tiers_version) < version),
    )


def count_tiered_by_an_older_version(engine: Engine, reference_set: str, version: int) -> int:
    query = select(func.count()).select_from(ImageRow)
    with Session(engine) as session:
        condition = _tiered_by_an_older_version(reference_set, version)
        return int(session.exec(query.where(condition)).one())


def tiered_by_an_older_version(
    engine: Engine, reference_set: str, version: int, after: str | None, limit: int
) -> list[TieredScore]:
    """The next `limit` records, by id, scored against the set and tiered by a version of its
    boundaries older than `version`."""
    query = (
        sql_select(
            col(ImageRow.id),
            col(ImageRow.score),
            col(ImageRow.tier),
            col(ImageRow.accepted),
            col(ImageRow.review_count),
            col(CrawlRow.rho),
        )
        .join(CrawlRow, col(CrawlRow.id) == col(ImageRow.crawl_id), isouter=True)
        .where(_tiered_by_an_older_version(reference_set, version))
    )
    if after is not None:
        query = query.where(col(ImageRow.id) > after)
    query = query.order_by(col(ImageRow.id)).limit(limit)
    with Session(engine) as session:
        return [
            TieredScore(image_id, float(score or 0.0), tier, accepted, not reviews and rho is None)
            for image_id, score, tier, accepted, reviews, rho in session.execute(query)
        ]


def set_tiers(
    engine: Engine, reference_set: str, version: int, changes: Mapping[str, Mapping[str, object]]
) -> None:
    """Tier, its source and version per record, and the filter's verdict (`accepted`) where it
    is still the filter's; scores unchanged. One UPDATE per distinct change (a handful: six
    tiers, two verdicts), each checking again what it was decided on, so that a record tiered
    by a newer version or reviewed meanwhile keeps what it has."""
    tiered: dict[tuple[tuple[str, object], ...], list[str]] = {}
    verdicts: dict[object, list[str]] = {}
    for image_id, values in changes.items():
        tiers = tuple(sorted((k, v) for k, v in values.items() if k != "accepted"))
        tiered.setdefault(tiers, []).append(image_id)
        if "accepted" in values:
            verdicts.setdefault(values["accepted"], []).append(image_id)
    with session_scope(engine) as session:
        for tiers, ids in tiered.items():
            session.execute(
                update(ImageRow)
                .where(col(ImageRow.id).in_(ids))
                .where(_tiered_by_an_older_version(reference_set, version))
                .values(dict(tiers))
            )
        for accepted, ids in verdicts.items():
            session.execute(
                update(ImageRow)
                .where(col(ImageRow.id).in_(ids), col(ImageRow.review_count) == 0)
                .values(accepted=accepted)
            )
