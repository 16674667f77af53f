"""Dedup's pixel check of near candidates, over HTTP, with real photographs in a real store.

The vectors are set by hand, so each test puts a candidate exactly where it wants it (between
the candidate threshold and ε, or above ε); the pixels are real photographs (scikit-learn's
samples) and their copies, kept in the local-folder store that dedup reads by id.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from services.common.storage import LocalFolderStore
from services.dedup.app import create_app
from services.dedup.config import DedupSettings
from tests.helpers import jpeg, live_server, sample_photo

DIM = 32
THRESHOLD = 0.9  # ε of model "m"
CANDIDATES_FROM = 0.5  # its candidate threshold


def at_cosine(base: np.ndarray, cosine: float, seed: int) -> list[float]:
    """A unit vector whose cosine to the unit vector `base` is `cosine`."""
    other = np.random.default_rng(seed).normal(size=base.size)
    other -= (other @ base) * base
    other /= np.linalg.norm(other)
    return [float(x) for x in cosine * base + np.sqrt(1 - cosine**2) * other]


@pytest.fixture
def store(tmp_path: Path) -> LocalFolderStore:
    return LocalFolderStore(tmp_path / "objects")


@pytest.fixture
def dedup(database_url: str, tmp_path: Path, store: LocalFolderStore) -> Iterator[httpx.Client]:
    settings = DedupSettings.model_validate(
        {
            "database_url": database_url,
            "qdrant_path": tmp_path / "qdrant",
            "thresholds": {"m": THRESHOLD},
            "candidate_thresholds": {"m": CANDIDATES_FROM},
            "storage": {"dir": store.root},
        }
    )
    with (
        live_server(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


@pytest.fixture
def base() -> np.ndarray:
    vector = np.random.default_rng(0).normal(size=DIM)
    return vector / np.linalg.norm(vector)


def keep(store: LocalFolderStore, data: bytes) -> str:
    """The bytes in the store under their sha256, as the gateway keeps them; their id."""
    image_id = hashlib.sha256(data).hexdigest()
    store.put(image_id, data)
    return image_id


def insert(
    client: httpx.Client, image_id: str, vector: list[float], **extra: Any
) -> dict[str, Any]:
    body = {"id": image_id, "model": "m", "vector": vector, **extra}
    response = client.post("/v1/dedup/insert", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


COPIES = {
    "grayscale": lambda image: jpeg(ImageOps.grayscale(image)),
    "flipped crop": lambda image: jpeg(
        ImageOps.mirror(image.crop((80, 50, image.width - 80, image.height - 50)))
    ),
    "JPEG quality 25": lambda image: jpeg(image, quality=25),
}


@pytest.mark.parametrize("kind", list(COPIES))
def test_a_copy_whose_embedding_is_only_near_is_found_by_its_pixels(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray, kind: str
) -> None:
    original = keep(store, jpeg(sample_photo("china.jpg")))
    assert insert(dedup, original, base.tolist(), stored=True)["status"] == "inserted"
    copy = keep(store, COPIES[kind](sample_photo("china.jpg")))
    outcome = insert(dedup, copy, at_cosine(base, 0.75, seed=1), stored=True)
    assert outcome["status"] == "duplicate"
    assert outcome["duplicate_of"]["id"] == original
    assert outcome["duplicate_of"]["by"] == "pixels"
    assert outcome["duplicate_of"]["score"] == pytest.approx(0.75, abs=1e-4)


def test_without_its_pixels_the_same_copy_is_judged_by_the_embedding_alone(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray
) -> None:
    original = keep(store, jpeg(sample_photo("china.jpg")))
    insert(dedup, original, base.tolist(), stored=True)
    copy = keep(store, jpeg(ImageOps.grayscale(sample_photo("china.jpg"))))
    assert insert(dedup, copy, at_cosine(base, 0.7, seed=1))["status"] == "inserted"


def test_a_different_photo_is_not_a_duplicate_however_near_its_embedding(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray
) -> None:
    """Two halves of one photograph: one scene, one light, no shared pixel; at cosine 0.95 the
    embedding alone would call them duplicates."""
    image = sample_photo("china.jpg")
    left = keep(store, jpeg(image.crop((0, 0, image.width // 2, image.height))))
    right = keep(store, jpeg(image.crop((image.width // 2, 0, image.width, image.height))))
    insert(dedup, left, base.tolist(), stored=True)
    outcome = insert(dedup, right, at_cosine(base, 0.95, seed=2), stored=True)
    assert outcome["status"] == "inserted"
    assert insert(dedup, sha_of("unstored"), at_cosine(base, 0.95, seed=3))["status"] == (
        "duplicate"
    )  # the same cosine without pixels: the embedding's call, as before


def sha_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_candidate_missing_from_the_store_is_judged_by_its_cosine(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray
) -> None:
    """Stored by a client that sends vectors only: nothing to compare the pixels with."""
    vectors_only = sha_of("vectors only")
    insert(dedup, vectors_only, base.tolist())
    copy = keep(store, jpeg(sample_photo("flower.jpg")))
    near = insert(dedup, copy, at_cosine(base, 0.7, seed=4), stored=True)
    assert near["status"] == "inserted"  # below ε, and the pixels cannot tell
    again = keep(store, jpeg(sample_photo("flower.jpg"), quality=60))
    above = insert(dedup, again, at_cosine(base, 0.95, seed=5), stored=True)
    assert above["status"] == "duplicate"
    # the flower (kept just before) is the nearer candidate by pixels or the vectors-only one
    assert above["duplicate_of"]["id"] in (vectors_only, copy)


def test_a_flat_image_is_judged_by_its_cosine(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray
) -> None:
    ramp = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    flat = keep(store, jpeg(Image.fromarray(ramp).convert("RGB")))
    insert(dedup, flat, base.tolist(), stored=True)
    darker = keep(store, jpeg(Image.fromarray(ramp // 2).convert("RGB")))
    assert insert(dedup, darker, at_cosine(base, 0.7, seed=6), stored=True)["status"] == (
        "inserted"
    )
    lighter = keep(store, jpeg(Image.fromarray(ramp // 2 + 100).convert("RGB")))
    outcome = insert(dedup, lighter, at_cosine(base, 0.97, seed=7), stored=True)
    assert outcome["duplicate_of"] == {
        "id": flat,
        "by": "embedding",
        "score": pytest.approx(0.97, abs=1e-4),
        "distance": None,
    }


def test_copies_in_one_batch_are_checked_against_the_ones_kept_before_them(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray
) -> None:
    original = keep(store, jpeg(sample_photo("flower.jpg")))
    copy = keep(store, jpeg(ImageOps.grayscale(sample_photo("flower.jpg"))))
    other = keep(store, jpeg(sample_photo("china.jpg")))
    items = [
        {"id": original, "model": "m", "vector": base.tolist(), "stored": True},
        {"id": copy, "model": "m", "vector": at_cosine(base, 0.7, seed=8), "stored": True},
        {"id": other, "model": "m", "vector": at_cosine(base, 0.95, seed=9), "stored": True},
    ]
    response = dedup.post("/v1/dedup/insert-batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["inserted", "duplicate", "inserted"]
    assert results[1]["duplicate_of"]["id"] == original


def test_the_rule_in_force_is_shown_with_each_collection(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray
) -> None:
    insert(dedup, keep(store, jpeg(sample_photo("china.jpg"))), base.tolist(), stored=True)
    stats = dedup.get("/v1/dedup/collections/default/m").json()
    assert (stats["threshold"], stats["candidate_threshold"], stats["pixel_check"]) == (
        THRESHOLD,
        CANDIDATES_FROM,
        True,
    )
    assert dedup.get("/v1/dedup/collections").json()["collections"] == [stats]


def test_a_check_with_the_image_decides_as_an_insert_would_and_stores_nothing(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray
) -> None:
    original = keep(store, jpeg(sample_photo("flower.jpg")))
    insert(dedup, original, base.tolist(), stored=True)
    grey = jpeg(ImageOps.grayscale(sample_photo("flower.jpg")))
    near = at_cosine(base, 0.7, seed=10)
    body = {"model": "m", "vectors": [near], "images": [base64.b64encode(grey).decode()]}
    answer = dedup.post("/v1/dedup/check", json=body).json()["vectors"][0]
    assert answer["neighbours"] == []  # nothing at cosine >= ε
    assert (answer["duplicate_of"]["id"], answer["duplicate_of"]["by"]) == (original, "pixels")
    # without the image, the embedding's rule: not a duplicate at 0.7
    alone = dedup.post("/v1/dedup/check", json={"model": "m", "vectors": [near]}).json()
    assert alone["vectors"][0]["duplicate_of"] is None
    assert dedup.get("/v1/dedup/collections/default/m").json()["points"] == 1


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["not base64!"], "images[0]"),
        ([], None),  # no images: allowed
        (["aGVsbG8=", "aGVsbG8="], "one image per vector"),
    ],
)
def test_a_check_with_images_that_are_not_is_refused_clearly(
    dedup: httpx.Client, base: np.ndarray, images: list[str], message: str | None
) -> None:
    insert(dedup, sha_of("some image"), base.tolist())
    body = {"model": "m", "vectors": [base.tolist()], "images": images}
    response = dedup.post("/v1/dedup/check", json=body)
    if message is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 422, response.text
    assert message in response.text


def test_bytes_that_are_no_image_get_no_verdict_from_the_pixels(
    dedup: httpx.Client, base: np.ndarray
) -> None:
    insert(dedup, sha_of("some image"), base.tolist())
    body = {"model": "m", "vectors": [base.tolist()], "images": ["aGVsbG8="]}  # "hello"
    answer = dedup.post("/v1/dedup/check", json=body).json()["vectors"][0]
    assert answer["duplicate_of"]["by"] == "embedding"  # cosine 1.0 decides


@pytest.mark.parametrize(
    "stored_bytes",
    [
        jpeg(Image.new("RGB", (2000, 10), (90, 140, 200))),  # a sliver: no room for keypoints
        b"\xff\xd8\xff\xe0 not really a JPEG",
        jpeg(sample_photo("china.jpg"))[:2000],  # cut short
    ],
    ids=["sliver", "not an image", "truncated"],
)
def test_pixels_the_check_cannot_read_leave_the_decision_to_the_embedding(
    dedup: httpx.Client, store: LocalFolderStore, base: np.ndarray, stored_bytes: bytes
) -> None:
    original = keep(store, stored_bytes)
    insert(dedup, original, base.tolist(), stored=True)
    query = keep(store, jpeg(sample_photo("flower.jpg")))
    outcome = insert(dedup, query, at_cosine(base, 0.95, seed=11), stored=True)
    assert (outcome["status"], outcome["duplicate_of"]["by"]) == ("duplicate", "embedding")


def test_a_check_with_too_many_images_is_refused(dedup: httpx.Client, base: np.ndarray) -> None:
    image = base64.b64encode(jpeg(Image.new("RGB", (8, 8)))).decode()
    body = {"model": "m", "vectors": [base.tolist()] * 17, "images": [image] * 17}
    response = dedup.post("/v1/dedup/check", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "too_many_images"


def test_images_sent_as_stored_but_not_in_this_store_are_counted_and_logged(
    dedup: httpx.Client,
    store: LocalFolderStore,
    base: np.ndarray,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dedup whose storage setting is not where the images are written checks no pixels:
    rather than losing the copies the check finds without a word, it says so on each collection,
    in its metrics and in its log (the decision falls back to the embedding, as before)."""
    original = keep(store, jpeg(sample_photo("flower.jpg")))
    insert(dedup, original, base.tolist(), stored=True)
    elsewhere = LocalFolderStore(tmp_path / "another-store")  # the gateway's, say
    copy = keep(elsewhere, jpeg(ImageOps.grayscale(sample_photo("flower.jpg"))))
    with caplog.at_level(logging.WARNING, logger="services.dedup.verification"):
        outcome = insert(dedup, copy, at_cosine(base, 0.7, seed=12), stored=True)
    assert outcome["status"] == "inserted"  # the pixels, which would say copy, were not found
    stats = dedup.get("/v1/dedup/collections/default/m").json()
    assert stats["stored_images_missing"] == 1
    assert any(copy in record.getMessage() for record in caplog.records)
    metrics = dedup.get("/metrics").text
    assert "seavl_dedup_stored_images_missing_total 1.0" in metrics
    # an image in the store is not counted
    third = keep(store, jpeg(sample_photo("china.jpg")))
    insert(dedup, third, at_cosine(base, 0.6, seed=13), stored=True)
    assert dedup.get("/v1/dedup/collections/default/m").json()["stored_images_missing"] == 1
