"""Relevance tiers as boundaries on the score, from one of three sources (issue 15).

The paper's tiers are fixed cosines of its CLIP-family encoders (Bronze ≥ 0.515 … Diamond ≥
0.555) and mean nothing for another encoder. Its Table 5 also says what a tier is as a share of
a crawl (CC3M: Bronze 0.40 %, Silver 0.23 %, Gold 0.13 %, Platinum 0.07 %, Diamond 0.05 %), and
its human study says how relevant each tier was. So a (reference set, model) takes its
boundaries from `paper` (the fixed numbers), `shares` (score quantiles of a background sample at
configured shares) or `calibrated` (from people's labels). Pure functions and wire types: the
filter decides, the gateway re-tiers stored scores with the same rule.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, model_validator

from services.common.schemas import Tier, TierSource

__all__ = ["TierSource"]  # defined beside Tier, which scores carry

RANKED_TIERS = (Tier.BRONZE, Tier.SILVER, Tier.GOLD, Tier.PLATINUM, Tier.DIAMOND)
TIER_FIELDS = ("bronze", "silver", "gold", "platinum", "diamond")
# scores are compared as the paper's x100 figures; this absorbs float noise at a boundary
SCORE_TOLERANCE = 1e-9


class TierBasis(StrEnum):
    """What a version of boundaries was computed from."""

    MODEL_DEFAULT = "model default"  # the model's shipped numbers, before any fit
    SAMPLE = "sample"  # a background sample given by an admin (`seavl tiers fit`)
    OBSERVED = "observed"  # scores a crawl asked to be observed (the streaming sketch)
    LABELS = "labels"  # a calibration's labelled samples


class TierShares(BaseModel):
    """Each tier's share of a crawl; what is left is Rejected. Default: the paper's CC3M row."""

    bronze: float = Field(default=0.0040, gt=0, lt=1)
    silver: float = Field(default=0.0023, gt=0, lt=1)
    gold: float = Field(default=0.0013, gt=0, lt=1)
    platinum: float = Field(default=0.0007, gt=0, lt=1)
    diamond: float = Field(default=0.0005, gt=0, lt=1)

    @model_validator(mode="after")
    def _leave_some_rejected(self) -> TierShares:
        if sum(self.per_tier()) >= 1:
            raise ValueError("the tiers' shares must add up to less than 1 (the rest is Rejected)")
        return self

    def per_tier(self) -> list[float]:
        return [getattr(self, name) for name in TIER_FIELDS]

    def at_or_above(self) -> list[float]:
        """The share of the crawl at or above each tier, Bronze first."""
        shares = self.per_tier()
        return [sum(shares[index:]) for index in range(len(shares))]

    def min_samples(self) -> int:
        """The smallest sample in which the rarest tier expects at least one image."""
        return math.ceil(1 / min(self.per_tier()) - 1e-9)


# The relevance people found within each of the paper's tiers on CC3M (its Table 5)
PAPER_TIER_RELEVANCE = (0.58, 0.70, 0.78, 0.84, 0.92)


def _paper_precision_at_or_above() -> list[float]:
    """The paper's per-tier relevance as the share of "yes" at or above each tier: each tier's
    relevance weighted by its CC3M share, over the tiers from it up (68, 77, 83, 87, 92 %)."""
    shares = TierShares().per_tier()
    weighted = [r * s for r, s in zip(PAPER_TIER_RELEVANCE, shares, strict=True)]
    return [round(sum(weighted[k:]) / sum(shares[k:]), 3) for k in range(len(shares))]


_PAPER_PRECISION = _paper_precision_at_or_above()


class CalibrationTargets(BaseModel):
    """The share of "yes" among the labelled samples at or above each tier's boundary. Default:
    the paper's CC3M tiers, whose per-tier relevance (58, 70, 78, 84, 92 %) is, at or above
    each, 68, 77, 83, 87 and 92 %."""

    bronze: float = Field(default=_PAPER_PRECISION[0], gt=0, le=1)
    silver: float = Field(default=_PAPER_PRECISION[1], gt=0, le=1)
    gold: float = Field(default=_PAPER_PRECISION[2], gt=0, le=1)
    platinum: float = Field(default=_PAPER_PRECISION[3], gt=0, le=1)
    diamond: float = Field(default=_PAPER_PRECISION[4], gt=0, le=1)

    @model_validator(mode="after")
    def _not_decreasing(self) -> CalibrationTargets:
        targets = self.ranked()
        if targets != sorted(targets):
            raise ValueError("calibration targets must not decrease from bronze to diamond")
        return self

    def ranked(self) -> list[float]:
        return [getattr(self, name) for name in TIER_FIELDS]


class Boundaries(BaseModel):
    """Each tier's lower bound on the score (inclusive); below Bronze is Rejected. `None`: no
    score reaches the tier (a calibration whose labels never reach its precision)."""

    bronze: float | None
    silver: float | None
    gold: float | None
    platinum: float | None
    diamond: float | None

    @model_validator(mode="after")
    def _ordered(self) -> Boundaries:
        lowers = self.ranked()
        reached = [value for value in lowers if value is not None]
        if lowers[: len(reached)] != reached:
            raise ValueError("a tier no score reaches (null) can only be followed by such tiers")
        if reached != sorted(reached):
            raise ValueError("tier boundaries must not decrease from bronze to diamond")
        return self

    @classmethod
    def of(cls, lowers: Sequence[float | None]) -> Boundaries:
        return cls(**dict(zip(TIER_FIELDS, lowers, strict=True)))

    def ranked(self) -> list[float | None]:
        return [getattr(self, name) for name in TIER_FIELDS]

    def tier_of(self, score: float) -> Tier:
        tier = Tier.REJECTED
        for candidate, lower in zip(RANKED_TIERS, self.ranked(), strict=True):
            if lower is not None and score >= lower - SCORE_TOLERANCE:
                tier = candidate
        return tier

    def bounds(self) -> list[tuple[Tier, float | None, float | None]]:
        """(tier, lower inclusive, upper exclusive) from Rejected up; None is unbounded (or, as
        a lower bound above Rejected, unreachable)."""
        lowers = self.ranked()
        rows: list[tuple[Tier, float | None, float | None]] = [(Tier.REJECTED, None, lowers[0])]
        for index, tier in enumerate(RANKED_TIERS):
            upper = lowers[index + 1] if index + 1 < len(lowers) else None
            rows.append((tier, lowers[index], upper))
        return rows

    def scaled(self, factor: float) -> Boundaries:
        return Boundaries.of([None if v is None else round(v * factor, 6) for v in self.ranked()])


PAPER_BOUNDARIES = Boundaries(bronze=0.515, silver=0.525, gold=0.535, platinum=0.545, diamond=0.555)


class ScoreSketch:
    """A streaming sketch of scores: a histogram of fixed 1e-4-wide bins over the cosine's range
    [-1, 1]. Quantiles are exact to one bin, any number of scores costs the same 20,001 counts,
    and two sketches add up (replicas, restarts). Stored zlib-compressed: mostly zeros."""

    WIDTH = 1e-4
    BINS = 20_001

    def __init__(self, counts: npt.NDArray[np.int64] | None = None) -> None:
        self.counts = np.zeros(self.BINS, dtype=np.int64) if counts is None else counts

    @classmethod
    def of(cls, scores: Sequence[float] | npt.NDArray[np.float64]) -> ScoreSketch:
        sketch = cls()
        sketch.add(scores)
        return sketch

    def add(self, scores: Sequence[float] | npt.NDArray[np.float64]) -> None:
        values = np.asarray(scores, dtype=np.float64)
        values = values[np.isfinite(values)]
        # a score's bin is the one whose lower edge is the score rounded down to the bin width
        index = np.floor((np.clip(values, -1.0, 1.0) + 1.0) / self.WIDTH + 1e-6).astype(np.int64)
        np.add.at(self.counts, np.minimum(index, self.BINS - 1), 1)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def lower_edge(self, index: int) -> float:
        return round(-1.0 + index * self.WIDTH, 6)

    def bound_at_share(self, share: float) -> float:
        """The bin edge with the share of scores at or above it nearest to `share` (of two as
        near, the higher)."""
        filled = np.flatnonzero(self.counts)
        if filled.size == 0:
            raise ValueError("an empty sketch has no quantiles")
        # edges up to the highest score's: above it no score is left, whatever the share
        at_or_above = np.cumsum(self.counts[::-1])[::-1][: filled[-1] + 1]
        distance = np.abs(at_or_above - share * self.count)
        return self.lower_edge(int(np.flatnonzero(distance == distance.min())[-1]))

    def to_bytes(self) -> bytes:
        return zlib.compress(self.counts.astype("<i8").tobytes(), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> ScoreSketch:
        counts = np.frombuffer(zlib.decompress(data), dtype="<i8").astype(np.int64)
        if counts.shape != (cls.BINS,):
            raise ValueError(f"a score sketch has {cls.BINS} bins, not {counts.shape}")
        return cls(counts)


def fit_shares(sketch: ScoreSketch, shares: TierShares) -> Boundaries:
    """Boundaries that put `shares` of the sketched scores in each tier."""
    if sketch.count < shares.min_samples():
        raise ValueError(
            f"{sketch.count} scores are too few for these shares: the rarest tier "
            f"({min(shares.per_tier()):.4%}) needs at least {shares.min_samples()} to hold one"
        )
    lowers = [sketch.bound_at_share(share) for share in shares.at_or_above()]
    # bins are shared by ties: keep the order even when two shares fall in one bin
    return Boundaries.of(list(np.maximum.accumulate(lowers)))


def fit_labels(
    scores: npt.NDArray[np.float64], is_yes: Sequence[bool], targets: Sequence[float]
) -> list[float | None]:
    """Per target precision, the lowest score threshold whose samples at or above it are at
    least that share "yes" (None: none is); the calibration's ρ is the same rule."""
    order = np.argsort(-scores, kind="stable")
    yes = np.array([is_yes[i] for i in order], dtype=np.float64)
    precision = np.cumsum(yes) / np.arange(1, len(order) + 1)
    ranked = scores[order]
    # a threshold at a score accepts every sample scoring as much (ties included)
    ends = [p for p in range(len(order)) if p + 1 == len(order) or ranked[p + 1] != ranked[p]]
    found: list[float | None] = []
    for target in targets:
        meeting = [p for p in ends if precision[p] >= target - SCORE_TOLERANCE]
        found.append(float(ranked[meeting[-1]]) if meeting else None)
    return found


def fit_calibrated(
    scores: npt.NDArray[np.float64], is_yes: Sequence[bool], targets: CalibrationTargets
) -> Boundaries:
    return Boundaries.of(fit_labels(scores, is_yes, targets.ranked()))


class DirectionDefaults(BaseModel):
    """A model's starting `shares` boundaries for any reference set, on the cosine t = x̂ · ĉ
    between an image and the direction of the set's centroid c: the score is s = |c| t, so a
    set's bound is t_k |c|. Measured once per model on a real background corpus at the CC3M
    shares (bench/tier_defaults.py), and replaced by a fit on the set's own background."""

    bronze: float = Field(gt=-1, lt=1)
    silver: float = Field(gt=-1, lt=1)
    gold: float = Field(gt=-1, lt=1)
    platinum: float = Field(gt=-1, lt=1)
    diamond: float = Field(gt=-1, lt=1)
    measured_on: str = Field(default="", description="the corpus and how (for the set's info)")

    @model_validator(mode="after")
    def _ordered(self) -> DirectionDefaults:
        Boundaries.of([getattr(self, name) for name in TIER_FIELDS])  # raises when out of order
        return self

    def for_centroid_norm(self, norm: float) -> Boundaries:
        return Boundaries.of([getattr(self, name) for name in TIER_FIELDS]).scaled(norm)


MODEL_DIRECTION_DEFAULTS: dict[str, DirectionDefaults] = {
    "efficientnet-lite0": DirectionDefaults(
        bronze=0.453,
        silver=0.474,
        gold=0.503,
        platinum=0.547,
        diamond=0.601,
        measured_on="bench/tier_defaults.py: 3000 reference sets drawn from 306 photographs of "
        "Debian and PyPI packages, background cosines pooled",
    ),
}
