"""The validator screening: images with the answers a validator should give (admins keep the
set), and a contributor's attempt, scored, which makes them a validator when it passes.

An item is scored as the share of its three questions answered right: photo quality and
caption fit exactly, relevance within one step of the expected answer (the guideline itself
lets validators hesitate between neighbouring options). The attempt's score is the mean over
every item of the set; an item left out scores 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from services.common.database import session_scope
from services.common.errors import ServiceError
from services.gateway.accounts import Role
from services.gateway.review_rules import CaptionFit
from services.gateway.tables import AccountRow, ScreeningAttemptRow, ScreeningItemRow

RELEVANCE_TOLERANCE = 1


@dataclass(frozen=True)
class ScreeningAnswer:
    quality: int
    relevance: int
    caption_fit: CaptionFit


def item_score(item: ScreeningItemRow, answer: ScreeningAnswer | None) -> Fraction:
    if answer is None:
        return Fraction(0)
    right = (
        int(answer.quality == item.quality)
        + int(abs(answer.relevance - item.relevance) <= RELEVANCE_TOLERANCE)
        + int(answer.caption_fit.value == item.caption_fit)
    )
    return Fraction(right, 3)


def add_item(engine: Engine, item: ScreeningItemRow) -> ScreeningItemRow:
    with session_scope(engine) as session:
        session.add(item)
    return item


def items(engine: Engine) -> list[ScreeningItemRow]:
    with session_scope(engine) as session:
        return list(session.exec(select(ScreeningItemRow).order_by(col(ScreeningItemRow.id))))


def item(engine: Engine, item_id: int) -> ScreeningItemRow:
    with session_scope(engine) as session:
        row = session.get(ScreeningItemRow, item_id)
    if row is None:
        raise ServiceError(404, "unknown_screening_item", f"no screening item {item_id}")
    return row


def remove_item(engine: Engine, item_id: int) -> None:
    with session_scope(engine) as session:
        removed = session.connection().execute(
            delete(ScreeningItemRow).where(col(ScreeningItemRow.id) == item_id)
        )
    if not removed.rowcount:
        raise ServiceError(404, "unknown_screening_item", f"no screening item {item_id}")


@dataclass(frozen=True)
class Attempt:
    score: float
    passed: bool
    role: Role


def take(
    engine: Engine,
    account_id: int,
    answers: Mapping[int, ScreeningAnswer],
    pass_score: float,
    attempts: int,
) -> Attempt:
    """Scores `answers` (by item id) against the whole set and records the attempt; a
    contributor who passes becomes a validator (a validator or admin keeps their role). Each
    account has `attempts` tries (409 `no_attempts_left` after them), so the answers cannot be
    found by changing one at a time and watching the score."""
    with session_scope(engine) as session:
        account = session.exec(
            select(AccountRow).where(AccountRow.id == account_id).with_for_update()
        ).first()
        if account is None:
            raise ServiceError(404, "unknown_account", f"no account {account_id}")
        tried = session.exec(
            select(func.count())
            .select_from(ScreeningAttemptRow)
            .where(ScreeningAttemptRow.account_id == account_id)
        ).one()
        if tried >= attempts:
            raise ServiceError(
                409, "no_attempts_left", f"the screening was taken {tried} times, the most there is"
            )
        rows = list(session.exec(select(ScreeningItemRow)))
        if not rows:
            raise ServiceError(409, "no_screening", "there is no screening to take yet")
        unknown = set(answers) - {r.id for r in rows}
        if unknown:
            raise ServiceError(
                422,
                "invalid_request",
                f"no screening items {sorted(unknown)}",
                field="answers",
            )
        score = sum((item_score(r, answers.get(r.id or 0)) for r in rows), Fraction(0)) / len(rows)
        passed = score >= Fraction(pass_score).limit_denominator(1000)
        if passed and account.role == Role.CONTRIBUTOR:
            account.role = Role.VALIDATOR.value
            session.add(account)
        session.add(ScreeningAttemptRow(account_id=account_id, score=float(score), passed=passed))
        return Attempt(float(score), passed, Role(account.role))
