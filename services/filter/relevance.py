"""The paper's relevance score, its tiers, and calibration from human labels; pure functions.

score(x) = mean over references z of cos(x, z) = x̂ · mean(ẑ): with the mean of the normalised
references kept, a score costs O(d) whatever the size of the reference set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.reference_sets import Label
from services.common.schemas import Tier
from services.filter.config import TierThresholds

TIERS_ASCENDING = [Tier.BRONZE, Tier.SILVER, Tier.GOLD, Tier.PLATINUM, Tier.DIAMOND]


def tier_bounds(thresholds: TierThresholds) -> list[tuple[Tier, float, float | None]]:
    """(tier, lower bound inclusive, upper bound exclusive) from Rejected to Diamond."""
    lowers = [
        thresholds.bronze,
        thresholds.silver,
        thresholds.gold,
        thresholds.platinum,
        thresholds.diamond,
    ]
    bounds: list[tuple[Tier, float, float | None]] = [(Tier.REJECTED, float("-inf"), lowers[0])]
    for index, tier in enumerate(TIERS_ASCENDING):
        upper = lowers[index + 1] if index + 1 < len(lowers) else None
        bounds.append((tier, lowers[index], upper))
    return bounds


def tier_of(score: float, thresholds: TierThresholds) -> Tier:
    """Scores are compared as the paper's x100 figures, so 0.545 is Platinum, not Gold."""
    tier = Tier.REJECTED
    for candidate, lower, _ in tier_bounds(thresholds)[1:]:
        if score >= lower - 1e-9:
            tier = candidate
    return tier


def mean_of_normalised(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The reference centroid: the mean of the unit vectors, deliberately not re-normalised."""
    units = vectors.astype(np.float64) / np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(units.mean(axis=0), dtype=np.float64)


def relevance_scores(
    unit_vectors: npt.NDArray[np.float32], centroid: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    # float32 products keep ~1e-7 accuracy on unit vectors and avoid copying the batch to float64
    return np.asarray(unit_vectors @ centroid.astype(np.float32), dtype=np.float64)


@dataclass(frozen=True)
class TierRow:
    tier: Tier
    lower: float
    upper: float | None
    count: int
    yes: int
    no: int
    not_sure: int

    @property
    def relevance(self) -> float | None:
        """Share of "yes" among the labelled samples of the tier (the paper's Table 5)."""
        return self.yes / self.count if self.count else None


@dataclass(frozen=True)
class CalibrationResult:
    rows: list[TierRow]
    recommended_rho: float | None
    precision_at_rho: float | None
    accepted_at_rho: int


def calibrate(
    scores: npt.NDArray[np.float64],
    labels: list[Label],
    thresholds: TierThresholds,
    target_precision: float,
) -> CalibrationResult:
    """Tier table, and the lowest ρ whose accepted samples are at least `target_precision` yes.

    "not sure" counts against precision: a curator who cannot tell is not a yes.
    """
    rows = []
    tiers = [tier_of(float(s), thresholds) for s in scores]
    for tier, lower, upper in tier_bounds(thresholds):
        members = [label for label, t in zip(labels, tiers, strict=True) if t is tier]
        rows.append(
            TierRow(
                tier=tier,
                lower=lower,
                upper=upper,
                count=len(members),
                yes=members.count(Label.YES),
                no=members.count(Label.NO),
                not_sure=members.count(Label.NOT_SURE),
            )
        )
    order = np.argsort(-scores, kind="stable")
    is_yes = np.array([labels[i] is Label.YES for i in order], dtype=np.float64)
    precision = np.cumsum(is_yes) / np.arange(1, len(order) + 1)
    sorted_scores = scores[order]
    best: tuple[float, float, int] | None = None
    for position in range(len(order)):
        # a threshold at this score accepts every sample scoring at least as much (ties included)
        if position + 1 < len(order) and sorted_scores[position + 1] == sorted_scores[position]:
            continue
        if precision[position] >= target_precision:
            best = (float(sorted_scores[position]), float(precision[position]), position + 1)
    if best is None:
        return CalibrationResult(rows, None, None, 0)
    return CalibrationResult(rows, best[0], best[1], best[2])
