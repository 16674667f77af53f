"""The points ledger: written with the review that earns the points, read for the leaderboard.

One entry per (account, kind, image) — a unique key, so a retried request, a review sent twice or
a flag computed again never counts twice. A submission's entry exists while the image is
accepted (overall flag True) and goes when a later review turns that round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, delete, func
from sqlalchemy import select as select_columns
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common.database import insert_if_new, session_scope
from services.gateway.people_schemas import Standing
from services.gateway.points_rules import PointKind, PointTable
from services.gateway.tables import AccountRow, PointRow


def award(
    session: Session,
    table: PointTable,
    account_id: int,
    kind: PointKind,
    image_id: str,
    points: float,
) -> None:
    """The entry, unless it is there already (then nothing changes)."""
    entry = PointRow(
        account_id=account_id, kind=kind.value, image_id=image_id, points=points, phase=table.phase
    )
    row = entry.model_dump(exclude={"id"})  # the database numbers it
    session.connection().execute(insert_if_new(session.get_bind(), PointRow), row)


def withdraw(session: Session, account_id: int, kind: PointKind, image_id: str) -> None:
    session.execute(
        delete(PointRow)
        .where(col(PointRow.account_id) == account_id)
        .where(col(PointRow.kind) == kind.value)
        .where(col(PointRow.image_id) == image_id)
    )


def settle_submission(
    session: Session,
    table: PointTable,
    owner: int | None,
    image_id: str,
    countries: Iterable[str],
    accepted: bool | None,
) -> None:
    """A submission earns its points while it is accepted."""
    if owner is None:
        return
    if accepted:
        points = table.submission_points(countries)
        award(session, table, owner, PointKind.SUBMISSION, image_id, points)
    else:
        withdraw(session, owner, PointKind.SUBMISSION, image_id)


def _totals() -> tuple[ColumnElement[float], ColumnElement[int], ColumnElement[int]]:
    return (
        func.coalesce(func.sum(PointRow.points), 0.0),
        func.sum(case((col(PointRow.kind) == PointKind.SUBMISSION.value, 1), else_=0)),
        func.sum(case((col(PointRow.kind) == PointKind.REVIEW.value, 1), else_=0)),
    )


def leaderboard(engine: Engine, limit: int) -> list[Standing]:
    """The accounts with points, most first (ties: who got there first, then by id)."""
    points, submissions, reviews = _totals()
    query = (
        select_columns(
            col(AccountRow.id),
            col(AccountRow.name),
            col(AccountRow.country),
            points,
            submissions,
            reviews,
        )
        .join(PointRow, col(PointRow.account_id) == col(AccountRow.id))
        .group_by(col(AccountRow.id), col(AccountRow.name), col(AccountRow.country))
        .order_by(points.desc(), func.max(PointRow.created_at), col(AccountRow.id))
        .limit(limit)
    )
    with session_scope(engine) as session:
        rows = session.execute(query).all()
    return [
        Standing(
            rank=rank,
            account_id=int(a or 0),
            name=str(n),
            country=str(c),
            points=float(p or 0),
            submissions=int(s or 0),
            reviews=int(r or 0),
        )
        for rank, (a, n, c, p, s, r) in enumerate(rows, 1)
    ]


@dataclass(frozen=True)
class MyPoints:
    points: float
    submissions: int
    reviews: int
    entries: list[PointRow]


def my_points(engine: Engine, account_id: int, entries: int = 100) -> MyPoints:
    points, submissions, reviews = _totals()
    with session_scope(engine) as session:
        total = session.execute(
            select_columns(points, submissions, reviews).where(
                col(PointRow.account_id) == account_id
            )
        ).one()
        recent = session.exec(
            select(PointRow)
            .where(PointRow.account_id == account_id)
            .order_by(col(PointRow.created_at).desc(), col(PointRow.id).desc())
            .limit(entries)
        ).all()
    return MyPoints(float(total[0] or 0), int(total[1] or 0), int(total[2] or 0), list(recent))
