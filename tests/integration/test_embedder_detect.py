"""`POST /v1/detect` on the real detectors over real HTTP: faces, plates, the unsafe score."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import httpx

from services.common.storage import LocalFolderStore
from services.embedder.app import create_app
from services.embedder.config import EmbedderSettings
from tests.helpers import ASTRONAUT_FACE as FACE
from tests.helpers import encode, live_server, photo_bytes, sample_photo
from tests.integration.test_embedder_api import embedder

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
        "faces": "mtcnn",
        "plates": "opencv-haar-plates",
        "unsafe": "nudenet-320n",
    }
    astronaut, coffee, flower = body["results"]
    faces = [r for r in astronaut["regions"] if r["kind"] == "face"]
    assert len(faces) == 1 and faces[0]["confidence"] >= 0.9
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


def test_without_the_unsafe_model_the_score_is_null(embedder_settings: SettingsFactory) -> None:
    settings = embedder_settings(detection={"unsafe": "none", "faces": "haar"})
    with (
        live_server(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        body = client.post(
            "/v1/detect", json={"images": [as_data(photo_bytes("astronaut.png", "PNG"))]}
        ).json()
    assert body["detectors"]["unsafe"] is None and body["detectors"]["faces"] == (
        "opencv-haar-frontalface"
    )
    assert body["results"][0]["unsafe"] is None


def test_odd_requests_are_refused_with_a_4xx(embedder: httpx.Client) -> None:
    for body in ({"images": []}, {}, {"images": [{"key": "x"}]}, {"images": "all"}):
        answer = embedder.post("/v1/detect", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"]
    not_base64 = embedder.post("/v1/detect", json={"images": [{"data": "%%%"}]})
    assert not_base64.status_code == 200
    (failure,) = not_base64.json()["results"]
    assert (failure["status"], failure["error"]["code"]) == (422, "invalid_base64")
