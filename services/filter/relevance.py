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
from services.common.tiers import Boundaries, fit_labels


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
    lower: float | None
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
    boundaries: Boundaries,
    target_precision: float,
) -> CalibrationResult:
    """Tier table, and the lowest ρ whose accepted samples are at least `target_precision` yes.

    "not sure" counts against precision: a curator who cannot tell is not a yes.
    """
    rows = []
    tiers = [boundaries.tier_of(float(s)) for s in scores]
    for tier, lower, upper in boundaries.bounds():
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
    is_yes = [label is Label.YES for label in labels]
    (rho,) = fit_labels(scores, is_yes, [target_precision])
    if rho is None:
        return CalibrationResult(rows, None, None, 0)
    accepted = [yes for score, yes in zip(scores, is_yes, strict=True) if score >= rho]
    return CalibrationResult(rows, rho, sum(accepted) / len(accepted), len(accepted))
