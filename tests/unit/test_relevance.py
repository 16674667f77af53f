"""The paper's relevance maths: the O(d) score, tier boundaries, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.reference_sets import Label
from services.common.schemas import Tier
from services.filter.config import TierThresholds
from services.filter.relevance import (
    calibrate,
    mean_of_normalised,
    relevance_scores,
)

PAPER = TierThresholds().boundaries()


def naive_mean_of_cosines(x: np.ndarray, references: np.ndarray) -> float:
    cosines = [float(x @ z / (np.linalg.norm(x) * np.linalg.norm(z))) for z in references]
    return float(np.mean(cosines))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_centroid_score_equals_the_naive_mean_of_cosines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    references = rng.normal(size=(300, 64)) * rng.uniform(0.1, 10, size=(300, 1))  # any norms
    queries = rng.normal(size=(20, 64)).astype(np.float32)
    centroid = mean_of_normalised(references.astype(np.float32))
    units = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    fast = relevance_scores(units.astype(np.float32), centroid)
    slow = [naive_mean_of_cosines(q, references) for q in queries]
    np.testing.assert_allclose(fast, slow, atol=1e-6)


@pytest.mark.parametrize(
    "score, tier",
    [
        (0.0, Tier.REJECTED),
        (0.5149, Tier.REJECTED),
        (0.515, Tier.BRONZE),
        (0.5249, Tier.BRONZE),
        (0.525, Tier.SILVER),
        (0.535, Tier.GOLD),
        (0.5449, Tier.GOLD),
        (0.545, Tier.PLATINUM),
        (0.5549, Tier.PLATINUM),
        (0.555, Tier.DIAMOND),
        (0.99, Tier.DIAMOND),
    ],
)
def test_tiers_at_their_boundaries(score: float, tier: Tier) -> None:
    assert PAPER.tier_of(score) is tier


def test_thresholds_must_increase() -> None:
    with pytest.raises(ValueError, match="must increase"):
        TierThresholds(bronze=0.6, silver=0.5)


def test_calibration_table_and_recommended_rho() -> None:
    # score: label. Diamond: 3 yes; Platinum: 2 yes 1 no; Gold: 1 yes 1 not sure; Silver: 1 no;
    # Rejected: 2 no.
    samples = [
        (0.60, Label.YES),
        (0.58, Label.YES),
        (0.556, Label.YES),
        (0.55, Label.YES),
        (0.548, Label.NO),
        (0.546, Label.YES),
        (0.54, Label.YES),
        (0.536, Label.NOT_SURE),
        (0.53, Label.NO),
        (0.40, Label.NO),
        (0.10, Label.NO),
    ]
    scores = np.array([s for s, _ in samples])
    result = calibrate(scores, [label for _, label in samples], PAPER, target_precision=0.85)
    table = {row.tier: (row.count, row.yes, row.no, row.not_sure) for row in result.rows}
    assert table == {
        Tier.REJECTED: (2, 0, 2, 0),
        Tier.BRONZE: (0, 0, 0, 0),
        Tier.SILVER: (1, 0, 1, 0),
        Tier.GOLD: (2, 1, 0, 1),
        Tier.PLATINUM: (3, 2, 1, 0),
        Tier.DIAMOND: (3, 3, 0, 0),
    }
    relevance = {row.tier: row.relevance for row in result.rows}
    assert relevance[Tier.PLATINUM] == pytest.approx(2 / 3)
    assert relevance[Tier.BRONZE] is None
    # Precision from the top: 1, 1, 1, 1, .8, .833, .857, .75 ...: the lowest at >= 0.85 is 0.54.
    assert result.recommended_rho == pytest.approx(0.54)
    assert result.precision_at_rho == pytest.approx(6 / 7)
    assert result.accepted_at_rho == 7


def test_calibration_without_a_reachable_precision() -> None:
    result = calibrate(np.array([0.6, 0.5]), [Label.NO, Label.NOT_SURE], PAPER, 0.85)
    assert result.recommended_rho is None and result.accepted_at_rho == 0


def test_tied_scores_are_accepted_together() -> None:
    result = calibrate(np.array([0.6, 0.55, 0.55]), [Label.YES, Label.YES, Label.NO], PAPER, 0.85)
    assert result.recommended_rho == pytest.approx(0.6)  # 0.55 would accept both ties: 2/3
