"""Tier boundaries from shares and labels, the score sketch, and their rules."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.schemas import Tier
from services.common.tiers import (
    PAPER_BOUNDARIES,
    Boundaries,
    CalibrationTargets,
    ScoreSketch,
    TierShares,
    fit_calibrated,
    fit_labels,
    fit_shares,
)

EVEN = TierShares(bronze=0.2, silver=0.15, gold=0.1, platinum=0.05, diamond=0.05)


def test_the_cc3m_shares_are_the_papers_table() -> None:
    shares = TierShares()
    assert shares.at_or_above() == pytest.approx([0.0088, 0.0048, 0.0025, 0.0012, 0.0005])
    assert shares.min_samples() == 2000


def test_shares_must_leave_some_images_rejected() -> None:
    with pytest.raises(ValueError, match="less than 1"):
        TierShares(bronze=0.6, silver=0.2, gold=0.1, platinum=0.1, diamond=0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_shares_fit_puts_each_share_of_the_sample_in_its_tier(seed: int) -> None:
    scores = np.random.default_rng(seed).normal(0.3, 0.05, size=20_000)
    bounds = fit_shares(ScoreSketch.of(scores), EVEN)
    tiers = [bounds.tier_of(float(s)) for s in scores]
    for tier, share in zip(
        (Tier.BRONZE, Tier.SILVER, Tier.GOLD, Tier.PLATINUM, Tier.DIAMOND),
        EVEN.per_tier(),
        strict=True,
    ):
        # one 1e-4 bin of a normal's density holds at most ~0.1 % of the sample
        assert tiers.count(tier) / len(scores) == pytest.approx(share, abs=0.002)
    assert tiers.count(Tier.REJECTED) / len(scores) == pytest.approx(0.45, abs=0.002)


def test_a_shares_fit_needs_enough_scores_for_the_rarest_tier() -> None:
    with pytest.raises(ValueError, match="needs at least 2000"):
        fit_shares(ScoreSketch.of(np.linspace(0, 1, 1999)), TierShares())


def test_the_sketch_survives_storage_and_adds_up() -> None:
    first = ScoreSketch.of([0.1, 0.2, 0.2])
    second = ScoreSketch.from_bytes(first.to_bytes())
    second.add([0.99, 1.0, -1.0, float("nan")])
    assert second.count == 6
    assert len(first.to_bytes()) < 2000  # mostly zeros, compressed


def test_boundaries_tier_scores_and_refuse_disorder() -> None:
    assert PAPER_BOUNDARIES.tier_of(0.5449) is Tier.GOLD
    assert PAPER_BOUNDARIES.tier_of(0.545) is Tier.PLATINUM
    unreachable = Boundaries.of([0.1, 0.2, 0.3, None, None])
    assert unreachable.tier_of(0.99) is Tier.GOLD
    with pytest.raises(ValueError, match="must not decrease"):
        Boundaries.of([0.2, 0.1, 0.3, 0.4, 0.5])
    with pytest.raises(ValueError, match="null"):
        Boundaries.of([0.1, None, 0.3, 0.4, 0.5])


def test_calibrated_boundaries_are_the_lowest_scores_reaching_each_precision() -> None:
    # from the top: yes yes yes no yes no no no: precision 1 1 1 .75 .8 .67 .57 .5
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    is_yes = [True, True, True, False, True, False, False, False]
    assert fit_labels(scores, is_yes, [0.5, 0.8, 1.0]) == [0.2, 0.5, 0.7]
    targets = CalibrationTargets(bronze=0.5, silver=0.6, gold=0.75, platinum=0.8, diamond=1.0)
    assert fit_calibrated(scores, is_yes, targets).ranked() == [0.2, 0.4, 0.5, 0.5, 0.7]
    never = CalibrationTargets(bronze=0.5, silver=0.6, gold=0.7, platinum=0.8, diamond=1.0)
    assert fit_calibrated(scores, [False, *is_yes[1:]], never).diamond is None


def test_the_sketch_keeps_each_score_in_its_bin() -> None:
    sketch = ScoreSketch.from_bytes(ScoreSketch.of([0.1234, 0.1234, -0.5, 1.0]).to_bytes())
    assert sketch.counts[sketch.BINS - 1] == 1  # 1.0, the last edge
    assert sketch.counts[round((0.1234 + 1) / sketch.WIDTH)] == 2
    assert sketch.counts[round((-0.5 + 1) / sketch.WIDTH)] == 1


def test_a_boundary_never_rises_above_the_highest_score() -> None:
    """Ties at the top (copies in a crawl) or one score for all: the boundaries stay at scores
    the sample has, never at the empty edges above them (which would accept nothing)."""
    top_tie = fit_shares(ScoreSketch.of([0.3] * 1998 + [0.5, 0.5]), TierShares())
    assert top_tie.ranked() == [0.5] * 5
    flat = fit_shares(ScoreSketch.of([0.3] * 2000), TierShares())
    assert flat.ranked() == [0.3] * 5


def test_the_default_calibration_targets_are_the_papers_relevance_at_or_above() -> None:
    assert CalibrationTargets().ranked() == [0.681, 0.765, 0.825, 0.873, 0.92]
