"""Review record access: handing images to validators (leased places), and writing a review
with everything it changes (the image's flags, how many reviews it needs, the points) in one
transaction.

An image has `reviews_needed` places (2, or 3 when the first two reviews disagree). A validator
who asks for work takes the lowest free place of the image with the fewest reviews for
`review_lease_minutes`; a review fills its place for good. Places are rows keyed by (image,
place number), so two validators can never take the same one: the second insert finds it taken
and moves on. A lease that runs out frees its place for the next validator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common.database import insert_if_new, session_scope, utcnow
from services.common.errors import ServiceError
from services.common.states import JobStatus
from services.gateway import points
from services.gateway.points_rules import PointKind, PointTable
from services.gateway.review_rules import CaptionFit, ReviewAnswers, flags, reviews_needed
from services.gateway.tables import ImageRow, ReviewRow, ReviewSlotRow


def _reviewable() -> list[ColumnElement[bool]]:
    """What makes an image one that people review: a person's submission, processed, not a
    copy of another, and not held as unsafe (that is for an admin)."""
    return [
        col(ImageRow.account_id).is_not(None),
        col(ImageRow.status) == JobStatus.DONE,
        col(ImageRow.duplicate_of).is_(None),
        col(ImageRow.held).is_(False),
    ]


def _free_expired(session: Session, now: datetime, image_id: str | None = None) -> None:
    """Leases that ran out give their places back. (Run first in a transaction: on SQLite it
    takes the write lock at once, so the reads after it are not overtaken.)"""
    statement = delete(ReviewSlotRow).where(
        col(ReviewSlotRow.expires_at).is_not(None), col(ReviewSlotRow.expires_at) <= now
    )
    if image_id is not None:
        statement = statement.where(col(ReviewSlotRow.image_id) == image_id)
    session.execute(statement)


def _take_place(
    session: Session, image_id: str, needed: int, reviewer_id: int, until: datetime | None
) -> bool:
    """The lowest free place of the image for `reviewer_id`; False when every place is taken
    (by now, or by another validator in the same instant)."""
    used = set(
        session.exec(select(ReviewSlotRow.slot).where(ReviewSlotRow.image_id == image_id)).all()
    )
    free = [place for place in range(needed) if place not in used]
    if not free:
        return False
    place = ReviewSlotRow(
        image_id=image_id, slot=free[0], reviewer_id=reviewer_id, expires_at=until
    )
    new = insert_if_new(session.get_bind(), ReviewSlotRow).returning(col(ReviewSlotRow.slot))
    return session.connection().execute(new, place.model_dump()).first() is not None


@dataclass(frozen=True)
class Assignment:
    image_id: str
    lease_expires_at: datetime


def next_for(engine: Engine, reviewer_id: int, lease_minutes: float) -> Assignment | None:
    """The image `reviewer_id` should review now: the one they hold, else a new lease on the
    image with the fewest reviews (then the oldest) that is not theirs, that they have not
    reviewed, and that has a free place. None when there is nothing to review."""
    now = utcnow()
    until = now + timedelta(minutes=lease_minutes)
    with session_scope(engine) as session:
        _free_expired(session, now)
        held = session.exec(
            select(ReviewSlotRow)
            .where(ReviewSlotRow.reviewer_id == reviewer_id)
            .where(col(ReviewSlotRow.expires_at).is_not(None))
        ).first()
        if held is not None and held.expires_at is not None:
            return Assignment(held.image_id, held.expires_at)
        taken = (
            select(ReviewSlotRow.image_id, func.count().label("places"))
            .group_by(col(ReviewSlotRow.image_id))
            .subquery()
        )
        mine = select(ReviewSlotRow.image_id).where(ReviewSlotRow.reviewer_id == reviewer_id)
        candidates = session.exec(
            select(ImageRow.id, ImageRow.reviews_needed)
            .outerjoin(taken, taken.c.image_id == col(ImageRow.id))
            .where(*_reviewable())
            .where(col(ImageRow.account_id) != reviewer_id)
            .where(col(ImageRow.id).not_in(mine))
            .where(func.coalesce(taken.c.places, 0) < col(ImageRow.reviews_needed))
            .order_by(col(ImageRow.review_count), col(ImageRow.created_at), col(ImageRow.id))
            .limit(20)
        ).all()
        for image_id, needed in candidates:
            if _take_place(session, image_id, needed, reviewer_id, until):
                return Assignment(image_id, until)
    return None


@dataclass(frozen=True)
class Reviewed:
    review: ReviewRow
    image: ImageRow


def _answers(row: ReviewRow) -> ReviewAnswers:
    return ReviewAnswers(
        quality=row.quality,
        relevance=row.relevance,
        caption_fit=CaptionFit(row.caption_fit),
        pii=row.pii,
        unsafe=row.unsafe,
    )


def submit(
    engine: Engine,
    image_id: str,
    reviewer_id: int,
    review: ReviewRow,
    table: PointTable,
) -> Reviewed:
    """Writes `review` of `image_id` by `reviewer_id` into its place (the one they lease, else
    a free one), then the image's flags and needs and the points, in one transaction.

    404 for an image that is not there or not a submission to review; 403 `own_image`; 409
    `already_reviewed`; 409 `review_not_needed` when every place is filled or leased to others.
    """
    now = utcnow()
    with session_scope(engine) as session:
        _free_expired(session, now, image_id)
        image = session.exec(
            select(ImageRow).where(ImageRow.id == image_id).with_for_update()
        ).first()
        if image is None or image.account_id is None:
            raise ServiceError(404, "unknown_image", f"no submission {image_id} to review")
        if image.status != JobStatus.DONE or image.duplicate_of is not None or image.held:
            raise ServiceError(
                409,
                "not_reviewable",
                "only processed submissions that are not duplicates nor held as unsafe are "
                "reviewed",
            )
        if image.account_id == reviewer_id:
            raise ServiceError(403, "own_image", "validators do not review their own images")
        if session.get(ReviewRow, (image_id, reviewer_id)) is not None:
            raise ServiceError(409, "already_reviewed", "you reviewed this image already")
        filled = session.connection().execute(
            update(ReviewSlotRow)
            .where(col(ReviewSlotRow.image_id) == image_id)
            .where(col(ReviewSlotRow.reviewer_id) == reviewer_id)
            .values(expires_at=None)
        )
        if not filled.rowcount and not _take_place(
            session, image_id, image.reviews_needed, reviewer_id, None
        ):
            raise ServiceError(409, "review_not_needed", "this image has all the reviews it needs")
        review.image_id, review.reviewer_id, review.created_at = image_id, reviewer_id, now
        session.add(review)
        session.flush()
        rows = session.exec(
            select(ReviewRow)
            .where(ReviewRow.image_id == image_id)
            .order_by(col(ReviewRow.created_at), col(ReviewRow.reviewer_id))
        ).all()
        answers = [_answers(r) for r in rows]
        decided = flags(answers)
        image.review_count = len(answers)
        image.reviews_needed = reviews_needed(answers)
        image.flag_quality, image.flag_caption_fit = decided.quality, decided.caption_fit
        image.flag_relevance, image.flag_overall = decided.relevance, decided.overall
        image.accepted = decided.overall
        image.updated_at = now
        session.add(image)
        points.award(session, table, reviewer_id, PointKind.REVIEW, image_id, table.review)
        countries = [c for c in image.countries.split(",") if c]
        points.settle_submission(
            session, table, image.account_id, image_id, countries, decided.overall
        )
    return Reviewed(review, image)


def reviews_of(engine: Engine, image_id: str) -> list[ReviewRow]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(ReviewRow)
                .where(ReviewRow.image_id == image_id)
                .order_by(col(ReviewRow.created_at))
            ).all()
        )
