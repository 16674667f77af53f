"""The validation rules: the paper's flags (appendix B) for 0 to 3 reviews, the agreement of two
validators, and when an image needs a third review."""

from __future__ import annotations

import pytest

from services.gateway.review_rules import (
    AGREEMENT_NEEDED,
    CaptionFit,
    Flags,
    ReviewAnswers,
    agreement,
    flags,
    reviews_needed,
)

YES, NO, UNSURE = CaptionFit.YES, CaptionFit.NO, CaptionFit.UNSURE


def review(
    quality: int = 1,
    relevance: int = 5,
    caption_fit: CaptionFit = YES,
    pii: bool = False,
    unsafe: bool = False,
) -> ReviewAnswers:
    return ReviewAnswers(
        quality=quality, relevance=relevance, caption_fit=caption_fit, pii=pii, unsafe=unsafe
    )


GOOD = review()
ALL_NONE = Flags(quality=None, caption_fit=None, relevance=None, overall=None)
ALL_TRUE = Flags(quality=True, caption_fit=True, relevance=True, overall=True)


def flags_of(quality: bool | None, caption_fit: bool | None, relevance: bool | None) -> Flags:
    """The expected flags, with overall as the paper defines it from the other three."""
    three = (quality, caption_fit, relevance)
    overall = False if False in three else (None if None in three else True)
    return Flags(quality=quality, caption_fit=caption_fit, relevance=relevance, overall=overall)


@pytest.mark.parametrize(
    "reviews, expected",
    [
        # No review: nothing is known yet.
        ([], ALL_NONE),
        # One review: a met threshold waits for the second validator (None), a missed one is
        # False at once.
        ([GOOD], ALL_NONE),
        ([review(quality=0)], flags_of(False, None, None)),
        ([review(caption_fit=NO)], flags_of(None, False, None)),
        ([review(caption_fit=UNSURE)], flags_of(None, False, None)),  # mean exactly 0.5
        ([review(relevance=3)], flags_of(None, None, None)),  # mean exactly 3
        ([review(relevance=2)], flags_of(None, None, False)),
        ([review(quality=0, caption_fit=NO, relevance=1)], flags_of(False, False, False)),
        # Two reviews.
        ([GOOD, GOOD], ALL_TRUE),
        ([GOOD, review(quality=0)], flags_of(False, True, True)),  # quality mean exactly 0.5
        ([review(quality=0), review(quality=0)], flags_of(False, True, True)),
        ([GOOD, review(caption_fit=UNSURE)], flags_of(True, True, True)),  # 0.75
        ([GOOD, review(caption_fit=NO)], flags_of(True, False, True)),  # exactly 0.5
        ([review(caption_fit=UNSURE), review(caption_fit=UNSURE)], flags_of(True, False, True)),
        ([review(relevance=3), review(relevance=3)], flags_of(True, True, True)),
        ([review(relevance=2), review(relevance=4)], flags_of(True, True, True)),  # exactly 3
        ([review(relevance=1), review(relevance=5)], flags_of(True, True, True)),
        ([review(relevance=2), review(relevance=3)], flags_of(True, True, False)),  # 2.5
        # Three reviews (the third asked for after a disagreement).
        ([GOOD, GOOD, GOOD], ALL_TRUE),
        ([GOOD, GOOD, review(quality=0)], flags_of(True, True, True)),  # 2/3
        ([GOOD, review(quality=0), review(quality=0)], flags_of(False, True, True)),  # 1/3
        (
            [GOOD, review(caption_fit=UNSURE), review(caption_fit=NO)],  # exactly 0.5
            flags_of(True, False, True),
        ),
        (
            [GOOD, review(caption_fit=UNSURE), review(caption_fit=UNSURE)],  # 2/3
            flags_of(True, True, True),
        ),
        ([GOOD, GOOD, review(caption_fit=NO)], flags_of(True, True, True)),  # 2/3
        (
            [review(relevance=2), review(relevance=3), review(relevance=4)],  # exactly 3
            flags_of(True, True, True),
        ),
        (
            [review(relevance=5), review(relevance=2), review(relevance=2)],  # exactly 3
            flags_of(True, True, True),
        ),
        (
            [review(relevance=2), review(relevance=3), review(relevance=3)],  # 8/3
            flags_of(True, True, False),
        ),
    ],
)
def test_flags_follow_appendix_b(reviews: list[ReviewAnswers], expected: Flags) -> None:
    assert flags(reviews) == expected


def test_overall_is_false_when_any_threshold_is_missed_even_with_one_review() -> None:
    assert flags([review(quality=0)]).overall is False
    assert flags([review(caption_fit=NO)]).overall is False
    assert flags([review(relevance=2)]).overall is False


def test_overall_waits_for_enough_reviews_when_every_threshold_is_met() -> None:
    assert flags([GOOD]).overall is None
    assert flags([GOOD, GOOD]).overall is True


def test_the_minimum_number_of_reviews_is_configurable() -> None:
    assert flags([GOOD, GOOD], min_reviews=3) == ALL_NONE
    assert flags([GOOD, GOOD, GOOD], min_reviews=3) == ALL_TRUE
    assert flags([GOOD], min_reviews=1) == ALL_TRUE


def test_pii_and_unsafe_answers_do_not_change_the_papers_flags() -> None:
    assert flags([review(pii=True, unsafe=True), review(pii=True, unsafe=True)]) == ALL_TRUE


def test_identical_answers_agree_fully_and_need_two_reviews() -> None:
    assert agreement(GOOD, GOOD) == 1.0
    assert reviews_needed([GOOD, GOOD]) == 2


@pytest.mark.parametrize(
    "other",
    [
        review(quality=0),
        review(relevance=2),
        review(caption_fit=UNSURE),
        review(pii=True),
        review(unsafe=True),
    ],
    ids=["quality", "relevance", "caption_fit", "pii", "unsafe"],
)
def test_one_differing_question_is_80_percent_and_needs_two_reviews(other: ReviewAnswers) -> None:
    assert agreement(GOOD, other) == 0.8
    assert agreement(other, GOOD) == 0.8
    assert reviews_needed([GOOD, other]) == 2


@pytest.mark.parametrize(
    "other",
    [
        review(quality=0, relevance=1),
        review(caption_fit=NO, pii=True),
        review(unsafe=True, quality=0),
    ],
)
def test_two_differing_questions_is_60_percent_and_needs_a_third(other: ReviewAnswers) -> None:
    assert agreement(GOOD, other) == 0.6
    assert reviews_needed([GOOD, other]) == 3


def test_complete_disagreement_is_zero() -> None:
    opposite = review(quality=0, relevance=1, caption_fit=NO, pii=True, unsafe=True)
    assert agreement(GOOD, opposite) == 0.0


@pytest.mark.parametrize(
    "first, second, agree",
    [
        (5, 3, True),  # both accept the image as SEA-relevant
        (4, 5, True),
        (3, 3, True),
        (1, 2, True),  # both reject it
        (2, 1, True),
        (3, 2, False),  # the two sides of the threshold
        (5, 1, False),
        (2, 4, False),
    ],
)
def test_relevance_agrees_when_both_are_on_the_same_side_of_3(
    first: int, second: int, agree: bool
) -> None:
    expected = 1.0 if agree else 0.8
    assert agreement(review(relevance=first), review(relevance=second)) == expected


def test_fewer_than_two_reviews_need_the_minimum() -> None:
    assert reviews_needed([]) == 2
    assert reviews_needed([GOOD]) == 2
    assert reviews_needed([], min_reviews=3) == 3


def test_only_the_first_two_reviews_decide_on_a_third() -> None:
    disagreeing = review(quality=0, relevance=1)
    assert reviews_needed([GOOD, GOOD, disagreeing]) == 2
    assert reviews_needed([GOOD, disagreeing, GOOD]) == 3


def test_the_agreement_needed_is_80_percent_and_configurable() -> None:
    assert AGREEMENT_NEEDED == 0.8
    one_apart = review(pii=True)
    assert reviews_needed([GOOD, one_apart], agreement_needed=1.0) == 3
    assert reviews_needed([GOOD, review(quality=0, pii=True)], agreement_needed=0.6) == 2


@pytest.mark.parametrize(
    "quality, relevance, field",
    [(2, 5, "quality"), (-1, 5, "quality"), (1, 0, "relevance"), (1, 6, "relevance")],
)
def test_answers_outside_the_form_are_refused(quality: int, relevance: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        review(quality=quality, relevance=relevance)
