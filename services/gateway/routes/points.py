"""Points: the leaderboard, and the caller's own points with the next reward."""

from __future__ import annotations

from fastapi import APIRouter

from services.common.errors import ServiceError
from services.gateway import points
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    Contributor,
    EngineDep,
    PageLimit,
    PointTableDep,
    SettingsDep,
    page_size,
)
from services.gateway.people_schemas import (
    Leaderboard,
    MyPoints,
    PointEntry,
    ThresholdOut,
)
from services.gateway.points_rules import Threshold

router = APIRouter(prefix="/v1", tags=["people"], responses=PUBLIC_ERRORS)


def _threshold(threshold: Threshold) -> ThresholdOut:
    return ThresholdOut(points=threshold.points, reward=threshold.reward.value)


@router.get("/leaderboard", response_model=Leaderboard, summary="Points of everyone, most first")
def leaderboard(
    _: Contributor,
    table: PointTableDep,
    settings: SettingsDep,
    engine: EngineDep,
    limit: PageLimit = 50,
) -> Leaderboard:
    standings = points.leaderboard(engine, page_size(settings, limit))
    return Leaderboard(
        phase=table.phase,
        thresholds=[_threshold(t) for t in table.thresholds],
        items=standings,
    )


@router.get("/me/points", response_model=MyPoints, summary="Your points and what they reach")
def my_points(caller: Contributor, table: PointTableDep, engine: EngineDep) -> MyPoints:
    if caller.account_id is None:
        raise ServiceError(404, "no_account", "this API key belongs to no account")
    mine = points.my_points(engine, caller.account_id)
    upcoming = table.next_threshold(mine.points)
    return MyPoints(
        phase=table.phase,
        points=mine.points,
        submissions=mine.submissions,
        reviews=mine.reviews,
        thresholds=[_threshold(t) for t in table.thresholds],
        next_threshold=_threshold(upcoming) if upcoming else None,
        entries=[PointEntry.model_validate(e) for e in mine.entries],
    )
