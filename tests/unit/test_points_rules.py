"""The contribution point tables of both phases (as shipped in `points/`), the points of an image
relevant to several countries, the next reward, and the refusal of a malformed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.common.countries import SeaCountry
from services.gateway.points_rules import POINTS_DIR, PointKind, PointTable, Reward, Threshold

PHASE_1 = PointTable.load(1)
PHASE_2 = PointTable.load(2)

# The seeds' country groups: the more underrepresented, the more an image earns.
GROUPS = {
    "ID": "common",
    "SG": "common",
    "PH": "common",
    "TH": "middle",
    "MY": "middle",
    "VN": "middle",
    "BN": "rare",
    "TL": "rare",
    "KH": "rare",
    "LA": "rare",
    "MM": "rare",
}
PHASE_1_POINTS = {"common": 2.0, "middle": 3.0, "rare": 4.0}  # paper, appendix H
PHASE_2_POINTS = {"common": 0.5, "middle": 1.0, "rare": 3.0}  # phase 2 page


def test_the_groups_cover_every_sea_country() -> None:
    assert set(GROUPS) == set(SeaCountry)


@pytest.mark.parametrize("country", sorted(GROUPS))
def test_an_image_earns_its_country_groups_points_in_each_phase(country: str) -> None:
    assert PHASE_1.submission_points([country]) == PHASE_1_POINTS[GROUPS[country]]
    assert PHASE_2.submission_points([country]) == PHASE_2_POINTS[GROUPS[country]]


def test_a_review_earns_one_point_in_both_phases() -> None:
    assert PHASE_1.review == 1.0
    assert PHASE_2.review == 1.0


def test_the_tables_know_their_phase_and_source() -> None:
    assert PHASE_1.phase == 1
    assert PHASE_2.phase == 2
    assert "appendix H" in PHASE_1.source
    assert "Phase 2" in PHASE_2.source


@pytest.mark.parametrize(
    "countries, phase_1, phase_2",
    [
        (["ID", "MM"], 4.0, 3.0),
        (["MM", "ID"], 4.0, 3.0),
        (["SG", "MY"], 3.0, 1.0),
        (["ID", "SG", "PH"], 2.0, 0.5),
        (["TH", "VN", "TL"], 4.0, 3.0),
        (list(GROUPS), 4.0, 3.0),
    ],
)
def test_an_image_of_several_countries_earns_its_highest_group(
    countries: list[str], phase_1: float, phase_2: float
) -> None:
    assert PHASE_1.submission_points(countries) == phase_1
    assert PHASE_2.submission_points(countries) == phase_2


def test_an_image_of_no_country_earns_nothing() -> None:
    assert PHASE_1.submission_points([]) == 0.0
    assert PHASE_2.submission_points(iter(())) == 0.0


def test_countries_are_taken_as_enum_members_too() -> None:
    assert PHASE_2.submission_points([SeaCountry.LA, SeaCountry.SG]) == 3.0


def test_a_country_outside_sea_is_refused() -> None:
    with pytest.raises(ValueError, match="US"):
        PHASE_1.submission_points(["ID", "US"])


def test_the_thresholds_of_each_phase() -> None:
    assert PHASE_1.thresholds == (Threshold(points=200, reward=Reward.CO_AUTHORSHIP),)
    assert PHASE_2.thresholds == (
        Threshold(points=200, reward=Reward.CERTIFICATE),
        Threshold(points=300, reward=Reward.CO_AUTHORSHIP),
    )


@pytest.mark.parametrize(
    "points, expected",
    [
        (0, Threshold(200, Reward.CERTIFICATE)),
        (199.5, Threshold(200, Reward.CERTIFICATE)),
        (200, Threshold(300, Reward.CO_AUTHORSHIP)),  # "200 or more" reaches the certificate
        (299.5, Threshold(300, Reward.CO_AUTHORSHIP)),
        (300, None),
        (1000, None),
    ],
)
def test_the_next_threshold_in_phase_2(points: float, expected: Threshold | None) -> None:
    assert PHASE_2.next_threshold(points) == expected


def test_the_next_threshold_in_phase_1() -> None:
    assert PHASE_1.next_threshold(199) == Threshold(200, Reward.CO_AUTHORSHIP)
    assert PHASE_1.next_threshold(200) is None


def test_point_kinds_are_the_api_values() -> None:
    assert [kind.value for kind in PointKind] == ["submission", "review"]


def valid_table() -> dict[str, Any]:
    """The shipped phase 2 table, to break one part of it at a time."""
    table: dict[str, Any] = json.loads((POINTS_DIR / "phase2.json").read_text(encoding="utf-8"))
    return table


def write_table(directory: Path, table: dict[str, Any], phase: int = 2) -> None:
    (directory / f"phase{phase}.json").write_text(json.dumps(table), encoding="utf-8")


def test_a_copy_of_a_shipped_table_loads_from_another_directory(tmp_path: Path) -> None:
    write_table(tmp_path, valid_table())
    assert PointTable.load(2, directory=tmp_path) == PHASE_2


def without(table: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in table.items() if name != key}


def with_submission(**changes: Any) -> dict[str, Any]:
    table = valid_table()
    table["submission"] = {**table["submission"], **changes}
    return table


def without_country(code: str) -> dict[str, Any]:
    table = valid_table()
    table["submission"] = without(table["submission"], code)
    return table


@pytest.mark.parametrize(
    "table, message",
    [
        (without_country("MM"), r"no points for \['MM'\]"),
        (with_submission(XX=2), r"outside SEA: \['XX'\]"),
        (with_submission(ID=-1), "submission ID must be a number"),
        (with_submission(ID="2"), "submission ID must be a number"),
        (with_submission(ID=True), "submission ID must be a number"),
        ({**valid_table(), "phase": 1}, "phase is 1, not 2"),
        (without(valid_table(), "review"), r"missing keys \['review'\]"),
        ({**valid_table(), "review": None}, "review must be a number"),
        (without(valid_table(), "source"), r"missing keys \['source'\]"),
        ({**valid_table(), "bonus": 5}, r"unknown keys \['bonus'\]"),
        ({**valid_table(), "submission": [2, 3, 4]}, "submission must be a JSON object"),
        (
            {
                **valid_table(),
                "thresholds": [
                    {"points": 300, "reward": "co_authorship"},
                    {"points": 200, "reward": "certificate"},
                ],
            },
            "ascending",
        ),
        (
            {
                **valid_table(),
                "thresholds": [
                    {"points": 200, "reward": "certificate"},
                    {"points": 200, "reward": "co_authorship"},
                ],
            },
            "ascending",
        ),
        (
            {**valid_table(), "thresholds": [{"points": 200, "reward": "medal"}]},
            "unknown reward 'medal'",
        ),
        ({**valid_table(), "thresholds": [{"points": 200}]}, "has points and reward"),
        ([1, 2], "the table must be a JSON object"),
    ],
    ids=[
        "missing-country",
        "unknown-country",
        "negative-points",
        "points-as-text",
        "points-as-bool",
        "wrong-phase",
        "no-review",
        "null-review",
        "no-source",
        "unknown-key",
        "submission-not-an-object",
        "thresholds-unordered",
        "thresholds-repeated",
        "unknown-reward",
        "threshold-without-reward",
        "not-an-object",
    ],
)
def test_a_malformed_table_is_refused_with_a_clear_message(
    tmp_path: Path, table: Any, message: str
) -> None:
    write_table(tmp_path, table)
    with pytest.raises(ValueError, match=message) as refused:
        PointTable.load(2, directory=tmp_path)
    assert "phase2.json" in str(refused.value)


def test_a_table_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "phase2.json").write_text("{submission: 2", encoding="utf-8")
    with pytest.raises(ValueError, match="phase2.json"):
        PointTable.load(2, directory=tmp_path)


def test_a_phase_without_a_table_is_refused() -> None:
    with pytest.raises(ValueError, match="phase 3"):
        PointTable.load(3)
