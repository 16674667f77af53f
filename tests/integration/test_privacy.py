"""The privacy and safety pass before storing: faces found by the embedder's real detectors in
a real photo are blurred in the bytes stored and exported (the original is never written),
or only flagged; an image at or past the safety threshold is held, never exported nor
reviewed; with the embedder down an upload is refused, and nothing is stored."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from services.gateway.auth import Role
from services.gateway.config import GatewaySettings
from services.gateway.intake import accept
from tests.helpers import ASTRONAUT_FACE, encode, free_port, photo, wait_for
from tests.integration.gateway_stack import Stack, running_stack

FACE = ASTRONAUT_FACE
# a part of the photo far from any face (the shuttle's wall, bottom right)
AWAY = (400, 300, 500, 360)


def astronaut_png() -> bytes:
    """The photo, with one corner pixel this test's own (no other test stores these bytes)."""
    image = photo("astronaut.png")
    image.putpixel((0, 0), tuple(int(b) for b in os.urandom(3)))
    return encode(image, "PNG")


@pytest.fixture
def stack_with(database_url: str, tmp_path: Path, live_embedder: str) -> Iterator[Any]:
    """A stack with the given gateway settings."""
    stacks: list[Any] = []

    def start(**extra: Any) -> Stack:
        context = running_stack(
            database_url, tmp_path, live_embedder, crawl={"roots": [str(tmp_path)]}, **extra
        )
        stacks.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stacks):
        context.__exit__(None, None, None)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def patch(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def stored_objects(stack: Stack) -> set[str]:
    return {p.name for p in stack.settings.storage.dir.rglob("*") if p.is_file()}


def export(stack: Stack, destination: Path) -> list[dict[str, Any]]:
    admin = stack.as_role(Role.ADMIN)
    asked = stack.gateway.post("/v1/exports", json={"destination": str(destination)}, headers=admin)
    assert asked.status_code == 202, asked.text
    url = f"/v1/exports/{asked.json()['id']}"
    wait_for(lambda: stack.gateway.get(url, headers=admin).json()["status"] == "done", timeout=120)
    return [
        row for path in destination.rglob("*.parquet") for row in pq.read_table(path).to_pylist()
    ]


def test_a_face_is_blurred_before_the_image_is_stored_and_in_exports(
    stack_with: Any, tmp_path: Path
) -> None:
    stack: Stack = stack_with()
    original = astronaut_png()
    never_stored = accept(original, GatewaySettings().images).sha256
    response = stack.upload(original)
    assert response.status_code == 202, response.text
    record = stack.wait_done(response.json()["id"])
    privacy = record["privacy"]
    assert privacy["faces"] == 1 and privacy["blurred"] is True, privacy
    assert privacy["detectors"]["faces"] == "blazeface"
    (region,) = [r for r in privacy["regions"] if r["kind"] == "face"]
    x0, y0, x1, y1 = region["box"]
    centre = ((x0 + x1) / 2 * 512, (y0 + y1) / 2 * 512)
    assert FACE[0] < centre[0] < FACE[2] and FACE[1] < centre[1] < FACE[3], region

    content = stack.gateway.get(
        f"/v1/images/{record['id']}/content", headers=stack.as_role(Role.ADMIN)
    ).content
    assert hashlib.sha256(content).hexdigest() == record["id"]
    before, after = pixels(original), pixels(content)
    face_before, face_after = patch(before, FACE), patch(after, FACE)
    assert np.abs(face_before - face_after).mean() > 8  # the face is gone
    # and its detail with it: a blurred patch has little left between neighbouring pixels
    assert (
        np.abs(np.diff(face_after, axis=1)).mean()
        < 0.3 * np.abs(np.diff(face_before, axis=1)).mean()
    )
    assert np.abs(patch(before, AWAY) - patch(after, AWAY)).max() == 0  # the rest as it was
    assert never_stored not in stored_objects(stack)  # the original was never written

    rows = export(stack, tmp_path / "out")
    (row,) = [r for r in rows if r["key"] == record["id"]]
    assert (row["faces"], row["plates"], row["blurred"]) == (1, privacy["plates"], True)
    assert row["image"]["bytes"] == content


def test_flag_only_keeps_the_image_and_says_what_was_found(stack_with: Any) -> None:
    stack: Stack = stack_with(privacy={"blur": []})
    original = astronaut_png()
    record = stack.wait_done(stack.upload(original).json()["id"])
    assert record["id"] == accept(original, stack.settings.images).sha256
    assert record["privacy"]["faces"] == 1 and record["privacy"]["blurred"] is False
    listed = stack.gateway.get(
        "/v1/images", params={"faces": "true"}, headers=stack.as_role(Role.ADMIN)
    ).json()
    assert [item["id"] for item in listed["items"]] == [record["id"]]
    none = stack.gateway.get(
        "/v1/images", params={"blurred": "true"}, headers=stack.as_role(Role.ADMIN)
    ).json()
    assert none["total"] == 0


def test_an_image_at_the_safety_threshold_is_held_never_exported(
    stack_with: Any, tmp_path: Path
) -> None:
    """The unsafe-content model is NudeNet (prepared for the tests' embedder); a threshold of
    0 holds whatever it scores, so no explicit picture is needed to see the policy work."""
    stack: Stack = stack_with(safety={"hold_above": 0.0})
    held = stack.wait_done(stack.upload(encode(photo("coffee.png"), "JPEG")).json()["id"])
    assert held["privacy"]["held"] is True
    assert held["privacy"]["detectors"]["unsafe"] == "nudenet-320n"
    assert 0 <= held["privacy"]["unsafe_score"] <= 1
    admin = stack.as_role(Role.ADMIN)
    listed = stack.gateway.get("/v1/images", params={"held": "true"}, headers=admin).json()
    assert [item["id"] for item in listed["items"]] == [held["id"]]
    assert export(stack, tmp_path / "out") == []
    content = f"/v1/images/{held['id']}/content"
    assert stack.gateway.get(content, headers=admin).status_code == 200  # for the admin's review
    for role in (Role.VALIDATOR, Role.CONTRIBUTOR):  # on no other page, the uploader's included
        shown = stack.gateway.get(content, headers=stack.as_role(role))
        assert (shown.status_code, shown.json()["error"]["code"]) == (403, "held_for_review")


def test_below_the_threshold_nothing_is_held(stack_with: Any) -> None:
    stack: Stack = stack_with(safety={"hold_above": 1.0})
    record = stack.wait_done(stack.upload(encode(photo("coffee.png"), "JPEG")).json()["id"])
    assert record["privacy"]["held"] is False and record["privacy"]["faces"] == 0


def test_with_the_embedder_down_an_upload_is_refused_and_nothing_stored(
    database_url: str, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running_stack(database_url, tmp_path, dead, with_references=False) as stack:
        before = stored_objects(stack)
        response = stack.upload(astronaut_png())
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "unavailable"
        assert int(response.headers["retry-after"]) > 0
        assert stored_objects(stack) == before
        listed = stack.gateway.get("/v1/images", headers=stack.as_role(Role.ADMIN)).json()
        assert listed["total"] == 0


def test_with_the_pass_off_records_say_it_did_not_run(stack_with: Any) -> None:
    stack: Stack = stack_with(privacy={"detect": False})
    original = astronaut_png()
    record = stack.wait_done(stack.upload(original).json()["id"])
    assert record["privacy"] is None
    assert record["id"] == accept(original, stack.settings.images).sha256
