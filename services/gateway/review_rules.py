"""The validation rules of SEA-VL as pure functions: the flags an image's reviews earn (paper,
appendix B) and how many reviews it needs.

Agreement between two validators is the share of the review form's five questions on which they
give the same answer: photo quality, cultural relevance, caption fit, PII and unsafe content.
Relevance counts as agreed when both answers fall on the same side of the relevance threshold
(both 3 or more, or both below 3): the relevance flag depends on that side alone, and an exact
match on a 5-point scale would count "unique to SEA" (5) against "people will likely think of
SEA" (4) as a disagreement although both validators accept the image. Every image gets two
reviews; when the first two agree on less than 80% of the questions (one question of the five
may differ, two may not), it gets a third.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

MIN_REVIEWS = 2
AGREEMENT_NEEDED = 0.8
QUESTIONS = 5  # quality, relevance, caption fit, PII, unsafe

# The flags' thresholds (appendix B): a mean above one half, or a relevance mean of 3 or more.
HALF = Fraction(1, 2)
RELEVANCE_THRESHOLD = 3
LEAST_RELEVANT, MOST_RELEVANT = 1, 5


class CaptionFit(StrEnum):
    YES = "yes"
    NO = "no"
    UNSURE = "unsure"


# The paper averages caption fit over yes / no / unsure, so unsure counts half: it neither
# confirms nor refutes the caption.
CAPTION_FIT_SCORE = {
    CaptionFit.YES: Fraction(1),
    CaptionFit.UNSURE: HALF,
    CaptionFit.NO: Fraction(0),
}


@dataclass(frozen=True)
class ReviewAnswers:
    """One validator's answers to the review form."""

    quality: int  # 1 when the photo's quality is good, else 0
    relevance: int  # 5 = unique to SEA … 1 = unrelated
    caption_fit: CaptionFit
    pii: bool
    unsafe: bool

    def __post_init__(self) -> None:
        if self.quality not in (0, 1):
            raise ValueError(f"quality must be 0 or 1, not {self.quality}")
        if not LEAST_RELEVANT <= self.relevance <= MOST_RELEVANT:
            raise ValueError(
                f"relevance must be {LEAST_RELEVANT} to {MOST_RELEVANT}, not {self.relevance}"
            )


@dataclass(frozen=True)
class Flags:
    """Appendix B's flags: True when the threshold is met by enough reviews, None when it is met
    by too few to tell, False when it is missed."""

    quality: bool | None
    caption_fit: bool | None
    relevance: bool | None
    overall: bool | None


def _flag(threshold_met: bool, enough_reviews: bool) -> bool | None:
    if not threshold_met:
        return False
    return True if enough_reviews else None


def _mean(values: Sequence[Fraction | int]) -> Fraction:
    """Exact, so a mean of exactly 0.5 or 3 sits on the threshold, not a rounding error away."""
    return Fraction(sum(values), len(values))


def flags(reviews: Sequence[ReviewAnswers], min_reviews: int = MIN_REVIEWS) -> Flags:
    """The image's flags from all its reviews. A missed threshold is False from the first review;
    a met one stays None until `min_reviews` validators agree with it."""
    if not reviews:
        return Flags(quality=None, caption_fit=None, relevance=None, overall=None)
    enough = len(reviews) >= min_reviews
    quality_met = _mean([r.quality for r in reviews]) > HALF
    caption_fit_met = _mean([CAPTION_FIT_SCORE[r.caption_fit] for r in reviews]) > HALF
    relevance_met = _mean([r.relevance for r in reviews]) >= RELEVANCE_THRESHOLD
    return Flags(
        quality=_flag(quality_met, enough),
        caption_fit=_flag(caption_fit_met, enough),
        relevance=_flag(relevance_met, enough),
        overall=_flag(quality_met and caption_fit_met and relevance_met, enough),
    )


def _relevant(answers: ReviewAnswers) -> bool:
    return answers.relevance >= RELEVANCE_THRESHOLD


def agreement(a: ReviewAnswers, b: ReviewAnswers) -> float:
    """The share of the form's questions on which two validators agree (module docstring)."""
    matches = (
        a.quality == b.quality,
        _relevant(a) == _relevant(b),
        a.caption_fit == b.caption_fit,
        a.pii == b.pii,
        a.unsafe == b.unsafe,
    )
    return sum(matches) / QUESTIONS


def reviews_needed(
    reviews: Sequence[ReviewAnswers],
    min_reviews: int = MIN_REVIEWS,
    agreement_needed: float = AGREEMENT_NEEDED,
) -> int:
    """`min_reviews`, or one more when the first two reviews (in the order they were given)
    agree on less than `agreement_needed` of the questions; later reviews never ask for more."""
    if len(reviews) >= 2 and agreement(reviews[0], reviews[1]) < agreement_needed:
        return min_reviews + 1
    return min_reviews
