"""The privacy benchmark's photos load from their packages with sane hand-drawn boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._people_photos import (
    ENSURE_SCRIPT,
    TRUTH_FILE,
    Box,
    MissingPackageError,
    PeoplePhoto,
    parse_box,
    people_photos,
)

TRUTH = json.loads(TRUTH_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def photos() -> list[PeoplePhoto]:
    """Loaded once: decoding 25 photos from their archives takes a few seconds."""
    try:
        return people_photos()
    except MissingPackageError as error:
        pytest.fail(f"{error} (run {ENSURE_SCRIPT} first)")


def test_every_photo_of_the_truth_file_is_loaded(photos: list[PeoplePhoto]) -> None:
    assert [p.name for p in photos] == list(TRUTH)
    for photo in photos:
        assert photo.image.mode == "RGB"
        assert list(photo.image.size) == TRUTH[photo.name]["size"]
        assert TRUTH[photo.name]["source"]["path"] in photo.source


def test_box_counts_match_the_truth_file(photos: list[PeoplePhoto]) -> None:
    for photo in photos:
        assert len(photo.faces) == len(TRUTH[photo.name]["faces"]), photo.name
        assert len(photo.plates) == len(TRUTH[photo.name]["plates"]), photo.name


def test_boxes_are_inside_the_image_and_not_empty(photos: list[PeoplePhoto]) -> None:
    for photo in photos:
        width, height = photo.image.size
        for box in photo.faces + photo.plates:
            assert 0 <= box.x0 < box.x1 <= width, (photo.name, box)
            assert 0 <= box.y0 < box.y1 <= height, (photo.name, box)


def test_the_set_is_big_enough_for_a_benchmark(photos: list[PeoplePhoto]) -> None:
    faces = sum(len(p.faces) for p in photos)
    plates = sum(len(p.plates) for p in photos)
    assert len(photos) >= 15
    assert faces >= 30
    assert plates >= 8
    assert any(not b.hard for p in photos for b in p.plates)
    assert any(b.hard for p in photos for b in p.faces)


def test_a_hard_box_is_read_from_its_object_form() -> None:
    assert parse_box([1, 2, 3, 4]) == Box(1, 2, 3, 4)
    assert parse_box({"box": [1, 2, 3, 4], "hard": True}) == Box(1, 2, 3, 4, hard=True)


def test_a_missing_package_names_the_script(tmp_path: Path) -> None:
    with pytest.raises(MissingPackageError, match="ensure-people-photos.sh"):
        people_photos(package_dir=tmp_path)
