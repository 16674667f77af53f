"""`POST /v1/detect` on the real detectors over real HTTP: faces, plates, the unsafe score."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import httpx

from bench._people_photos import people_photos
from services.common.storage import LocalFolderStore
from services.embedder.app import create_app
from services.embedder.config import EmbedderSettings
from tests.helpers import ASTRONAUT_FACE as FACE
from tests.helpers import encode, live_server, photo, photo_bytes, sample_photo
from tests.integration.test_embedder_api import embedder, metric

__all__ = ["embedder"]  # the fixture, used by name

SettingsFactory = Callable[..., EmbedderSettings]


def as_data(image: bytes) -> dict[str, str]:
    return {"data": base64.b64encode(image).decode()}


def test_the_face_of_a_real_photo_is_found_and_a_photo_without_people_has_none(
    embedder: httpx.Client,
) -> None:
    answer = embedder.post(
        "/v1/detect",
        json={
            "images": [
                as_data(photo_bytes("astronaut.png", "PNG")),
                as_data(photo_bytes("coffee.png")),
                as_data(encode(sample_photo("flower.jpg"), "JPEG")),
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["detectors"] == {
        "faces": "blazeface",
        "plates": "opencv-haar-plates",
        "unsafe": "nudenet-320n",
    }
    astronaut, coffee, flower = body["results"]
    faces = [r for r in astronaut["regions"] if r["kind"] == "face"]
    assert len(faces) == 1 and faces[0]["confidence"] >= 0.6
    x0, y0, x1, y1 = (v * 512 for v in faces[0]["box"])
    overlap = max(0.0, min(x1, FACE[2]) - max(x0, FACE[0])) * max(
        0.0, min(y1, FACE[3]) - max(y0, FACE[1])
    )
    union = (x1 - x0) * (y1 - y0) + (FACE[2] - FACE[0]) * (FACE[3] - FACE[1]) - overlap
    assert overlap / union >= 0.4
    assert (astronaut["width"], astronaut["height"]) == (512, 512)
    for other in (coffee, flower):
        assert [r for r in other["regions"] if r["kind"] == "face"] == []
    for result in body["results"]:
        assert 0 <= result["unsafe"] < 0.5  # none of them is explicit


def test_a_stored_image_is_read_by_key_and_a_bad_one_fails_alone(
    embedder: httpx.Client, embedder_settings: SettingsFactory
) -> None:
    store = embedder_settings().storage.open()
    assert isinstance(store, LocalFolderStore)
    data = photo_bytes("astronaut.png", "PNG")
    key = hashlib.sha256(data).hexdigest()
    store.put(key, data)
    answer = embedder.post(
        "/v1/detect",
        json={"images": [{"key": key}, as_data(b"not an image"), {"key": "0" * 64}]},
    )
    assert answer.status_code == 200, answer.text
    found, unreadable, missing = answer.json()["results"]
    assert [r["kind"] for r in found["regions"]].count("face") == 1
    assert unreadable["status"] in (415, 422) and "error" in unreadable
    assert missing["status"] == 404


def detected(settings: EmbedderSettings, *images: bytes) -> dict[str, Any]:
    """`POST /v1/detect`'s answer for the images, from an embedder on these settings."""
    with (
        live_server(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        answer = client.post("/v1/detect", json={"images": [as_data(i) for i in images]})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_mtcnn_is_still_offered(embedder_settings: SettingsFactory) -> None:
    body = detected(
        embedder_settings(detection={"faces": "mtcnn"}), photo_bytes("astronaut.png", "PNG")
    )
    assert body["detectors"]["faces"] == "mtcnn"
    faces = [r for r in body["results"][0]["regions"] if r["kind"] == "face"]
    assert len(faces) == 1 and faces[0]["confidence"] >= 0.9


def plate_photo() -> tuple[bytes, tuple[float, float, float, float]]:
    """A real photo of a car whose plate the cascade finds (bench/_people_photos.py), as a
    JPEG, and the plate's hand-drawn box as fractions of the image."""
    (car,) = [p for p in people_photos() if p.name == "fast_alpr_skoda"]
    plate = car.plates[0]
    width, height = car.image.size
    box = (plate.x0 / width, plate.y0 / height, plate.x1 / width, plate.y1 / height)
    return encode(car.image, "JPEG"), box


def test_plates_are_looked_for_where_the_encoder_sees_a_vehicle(
    embedder_settings: SettingsFactory,
) -> None:
    car, plate = plate_photo()
    found: dict[float | None, list[dict[str, Any]]] = {}
    for threshold in (0.02, 0.99, None):  # the default, above this car's share, no gate
        settings = embedder_settings(detection={"plates_from_vehicles": threshold})
        car_result, coffee = detected(settings, car, photo_bytes("coffee.png"))["results"]
        found[threshold] = [r for r in car_result["regions"] if r["kind"] == "plate"]
        assert 0.5 < car_result["vehicles"] < 0.99
        assert coffee["vehicles"] < 0.02
        assert [r for r in coffee["regions"] if r["kind"] == "plate"] == []
    assert found[0.99] == []  # the gate closed: the cascade did not run
    for threshold in (0.02, None):
        boxes = [r["box"] for r in found[threshold]]
        assert any(
            min(b[2], plate[2]) > max(b[0], plate[0]) and min(b[3], plate[3]) > max(b[1], plate[1])
            for b in boxes
        ), boxes


def test_the_embedding_of_bytes_just_screened_is_not_computed_again(
    embedder_settings: SettingsFactory,
) -> None:
    """The privacy pass encodes each image; the embedding asked for next, of the same bytes, is
    that output (the same numbers an embedder that keeps nothing computes)."""
    data = photo_bytes("astronaut.png", "PNG")
    answers = {}
    for kept in (2048, 0):
        with (
            live_server(create_app(embedder_settings(recent_outputs=kept))) as url,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            assert client.post("/v1/detect", json={"images": [as_data(data)]}).status_code == 200
            before = metric(
                client, "seavl_embedder_reused_outputs_total", model="efficientnet-lite0"
            )
            embedded = client.post("/v1/embed", json={"images": [as_data(data)], "top_k": 3})
            assert embedded.status_code == 200, embedded.text
            after = metric(
                client, "seavl_embedder_reused_outputs_total", model="efficientnet-lite0"
            )
            answers[kept] = (embedded.json()["results"][0], after - before)
    (reused, reuses), (computed, none) = answers[2048], answers[0]
    assert (reuses, none) == (1, 0)
    assert reused == computed  # embedding, labels, sha256, pHash, size: all alike


def test_asked_with_the_detection_the_embedding_is_what_embed_answers(
    embedder_settings: SettingsFactory,
) -> None:
    """`embed` in a detection: each image's embedding comes with its findings, the answer
    `POST /v1/embed` gives for the same bytes (here computed anew: the embedder keeps nothing),
    so a caller need not ask again, of a replica that never saw the image; unasked, none."""
    images = [photo_bytes("coffee.png"), photo_bytes("astronaut.png"), b"not an image"]
    with (
        live_server(create_app(embedder_settings(recent_outputs=0))) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        asked = client.post(
            "/v1/detect", json={"images": [as_data(i) for i in images], "embed": True}
        )
        unasked = client.post("/v1/detect", json={"images": [as_data(images[0])]})
        embedded = client.post(
            "/v1/embed", json={"images": [as_data(i) for i in images[:2]], "encoding": "base64"}
        )
    assert asked.status_code == unasked.status_code == embedded.status_code == 200, asked.text
    coffee, astronaut, broken = asked.json()["results"]
    assert "error" in broken and "embedded" not in broken  # a failure alone, as before
    for found, expected in zip((coffee, astronaut), embedded.json()["results"], strict=True):
        assert {k: v for k, v in found["embedded"].items() if k != "labels"} == expected
    assert [r["kind"] for r in astronaut["regions"]].count("face") == 1  # findings as before
    assert unasked.json()["results"][0]["embedded"] is None


def test_the_same_bytes_again_are_answered_alike(embedder_settings: SettingsFactory) -> None:
    """A large JPEG twice: the second time its encoding is remembered (the detectors decode it
    again), and the answer is the same, at the analysis size, not the decode's."""
    large = encode(photo("astronaut.png").resize((2400, 1200)), "JPEG")
    with (
        live_server(create_app(embedder_settings())) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        answers = []
        for _ in range(2):
            before = metric(
                client, "seavl_embedder_reused_outputs_total", model="efficientnet-lite0"
            )
            answer = client.post("/v1/detect", json={"images": [as_data(large)]})
            assert answer.status_code == 200, answer.text
            after = metric(
                client, "seavl_embedder_reused_outputs_total", model="efficientnet-lite0"
            )
            answers.append((answer.json()["results"][0], after - before))
    (first, reused_first), (second, reused_second) = answers
    assert (reused_first, reused_second) == (0, 1)
    assert (first["width"], first["height"]) == (640, 320)
    assert first == second
    assert [r["kind"] for r in first["regions"]].count("face") == 1


def test_without_the_unsafe_model_the_score_is_null(embedder_settings: SettingsFactory) -> None:
    settings = embedder_settings(detection={"unsafe": "none", "faces": "haar"})
    body = detected(settings, photo_bytes("astronaut.png", "PNG"))
    assert body["detectors"]["unsafe"] is None and body["detectors"]["faces"] == (
        "opencv-haar-frontalface"
    )
    assert body["results"][0]["unsafe"] is None


def test_odd_requests_are_refused_with_a_4xx(embedder: httpx.Client) -> None:
    odd: list[dict[str, Any]] = [{"images": []}, {}, {"images": [{"key": "x"}]}, {"images": "all"}]
    for body in odd:
        answer = embedder.post("/v1/detect", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"]
    not_base64 = embedder.post("/v1/detect", json={"images": [{"data": "%%%"}]})
    assert not_base64.status_code == 200
    (failure,) = not_base64.json()["results"]
    assert (failure["status"], failure["error"]["code"]) == (422, "invalid_base64")
