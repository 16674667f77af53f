"""SEA-VL's contribution points as pure rules: what an accepted submission or a review earns in a
phase, and the next reward a contributor is working towards. The numbers are data, one file per
phase (`points/phase<N>.json`), each naming where they come from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from services.common.countries import SeaCountry

POINTS_DIR = Path(__file__).with_name("point_tables")
TABLE_KEYS = frozenset({"phase", "source", "submission", "review", "thresholds"})
SEA_CODES = frozenset(country.value for country in SeaCountry)


class PointKind(StrEnum):
    SUBMISSION = "submission"
    REVIEW = "review"


class Reward(StrEnum):
    CERTIFICATE = "certificate"  # phase 2: certificate of participation and merchandise
    CO_AUTHORSHIP = "co_authorship"


@dataclass(frozen=True)
class Threshold:
    points: float
    reward: Reward


@dataclass(frozen=True)
class PointTable:
    phase: int
    submission: Mapping[str, float]  # points per accepted image, by country code
    review: float
    thresholds: tuple[Threshold, ...]  # ascending
    source: str

    @classmethod
    def load(cls, phase: int, directory: Path = POINTS_DIR) -> PointTable:
        """The table of `phase`, checked whole, so a mistyped file stops the gateway at start
        rather than paying wrong points."""
        path = directory / f"phase{phase}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"no points table for phase {phase}: {path} does not exist") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error})") from error
        try:
            return _parse(data, phase)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    def submission_points(self, countries: Iterable[str]) -> float:
        """The points of an image relevant to `countries`: the highest of their groups, since
        the tables reward underrepresented countries and one image is paid once. 0 for none."""
        codes = [SeaCountry(country) for country in countries]
        return max((self.submission[code] for code in codes), default=0.0)

    def next_threshold(self, points: float) -> Threshold | None:
        """The first reward not yet reached ("200 or more points" reaches 200); None after all."""
        return next((t for t in self.thresholds if t.points > points), None)


def _points(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{where} must be a number of points, 0 or more, not {value!r}")
    return float(value)


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, not {value!r}")
    return value


def _parse(data: object, phase: int) -> PointTable:
    table = _object(data, "the table")
    if unknown_keys := table.keys() - TABLE_KEYS:
        raise ValueError(f"unknown keys {sorted(unknown_keys)}; expected {sorted(TABLE_KEYS)}")
    if missing_keys := TABLE_KEYS - table.keys():
        raise ValueError(f"missing keys {sorted(missing_keys)}")
    if table["phase"] != phase:
        raise ValueError(f"phase is {table['phase']!r}, not {phase}")
    source = table["source"]
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must name where the numbers come from")

    submission = _object(table["submission"], "submission")
    if outside_sea := submission.keys() - SEA_CODES:
        raise ValueError(f"submission names countries outside SEA: {sorted(outside_sea)}")
    if without_points := SEA_CODES - submission.keys():
        raise ValueError(f"submission has no points for {sorted(without_points)}")

    thresholds_data = table["thresholds"]
    if not isinstance(thresholds_data, list):
        raise ValueError(f"thresholds must be a list, not {thresholds_data!r}")
    thresholds = tuple(_threshold(item) for item in thresholds_data)
    levels = [threshold.points for threshold in thresholds]
    if any(low >= high for low, high in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"thresholds must be in ascending order of points, not {levels}")

    return PointTable(
        phase=phase,
        submission=MappingProxyType(
            {code.value: _points(submission[code], f"submission {code}") for code in SeaCountry}
        ),
        review=_points(table["review"], "review"),
        thresholds=thresholds,
        source=source,
    )


def _threshold(data: object) -> Threshold:
    item = _object(data, "a threshold")
    if set(item) != {"points", "reward"}:
        raise ValueError(f"a threshold has points and reward, not {sorted(item)}")
    reward = item["reward"]
    if not isinstance(reward, str) or reward not in set(Reward):
        raise ValueError(f"unknown reward {reward!r}; expected one of {[r.value for r in Reward]}")
    return Threshold(points=_points(item["points"], "a threshold's points"), reward=Reward(reward))
