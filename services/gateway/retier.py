"""`seavl tiers retier SET`: stored images tiered again by the set's boundaries in force.

Boundaries change (a fit, a calibration, crawl scores settling them) while stored scores do
not: a tier is a function of the score and the boundaries, so re-tiering reads each record's
score and writes its tier, tier source and version, never embedding anything again. The
filter's verdict (`accepted`, score ≥ ρ) follows ρ, except where it is no longer the filter's:
on images people have reviewed (their overall flag) and of a crawl that set its own ρ. Only
records scored against the set and tiered by an older version are considered (one tiered by a
newer version meanwhile, as a crawl refits the boundaries, stays); each batch is committed, so
an interrupted run is finished by running it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from services.common.errors import ServiceError
from services.common.reference_sets import ReferenceSetInfo, TierBoundariesOut
from services.common.tiers import SCORE_TOLERANCE
from services.gateway import records


@dataclass
class Retiered:
    """What a run did: records examined, and how many changed tier or verdict."""

    set: str
    version: int
    examined: int = 0
    tier_changed: int = 0
    accepted_changed: int = 0


def in_force(info: ReferenceSetInfo) -> TierBoundariesOut:
    if info.tiers is None:
        raise ServiceError(
            409, "empty_set", f"set {info.name!r} has no references, so no tier boundaries"
        )
    return info.tiers


def retier(
    engine: Engine,
    info: ReferenceSetInfo,
    batch_size: int,
    advance: Callable[[int], None],
) -> Retiered:
    """Re-tiers every record of the set tiered by another version than the one in force."""
    tiers = in_force(info)
    done = Retiered(info.name, tiers.version)
    after: str | None = None
    while batch := records.tiered_by_an_older_version(
        engine, info.name, tiers.version, after, batch_size
    ):
        changes: dict[str, dict[str, object]] = {}
        for record in batch:
            tier = tiers.boundaries.tier_of(record.score)
            change: dict[str, object] = {
                "tier": tier.value,
                "tier_source": tiers.source.value,
                "tiers_version": tiers.version,
            }
            done.tier_changed += tier.value != record.tier
            if record.verdict_is_the_filters:
                accepted = record.score >= info.rho - SCORE_TOLERANCE
                change["accepted"] = accepted
                done.accepted_changed += accepted != record.accepted
            changes[record.image_id] = change
        records.set_tiers(engine, info.name, tiers.version, changes)
        done.examined += len(batch)
        after = batch[-1].image_id
        advance(len(batch))
    return done
