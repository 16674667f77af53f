"""The embedder over real HTTP (uvicorn on 127.0.0.1) with the real default model."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.storage import LocalFolderStore
from services.embedder.app import create_app
from services.embedder.config import EmbedderSettings
from tests.helpers import (
    encode,
    live_server,
    noise_image,
    photo_bytes,
    png_with_header,
    solid,
    wait_for,
)

SettingsFactory = Callable[..., EmbedderSettings]


@pytest.fixture
def embedder(embedder_settings: SettingsFactory) -> Iterator[httpx.Client]:
    with (
        live_server(create_app(embedder_settings())) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def post_images(client: httpx.Client, *images: bytes, **fields: Any) -> httpx.Response:
    files = [
        ("images", (f"image{i}", data, "application/octet-stream")) for i, data in enumerate(images)
    ]
    return client.post("/v1/embed", files=files, data={k: str(v) for k, v in fields.items()})


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """A sample's value from /metrics, 0 when absent."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class HangUpListener:
    """Sets `listening` when the app asks for a message after the whole request body.

    The embed route does that only once its images are queued, to hear the client hang up."""

    def __init__(self, app: ASGIApp, listening: threading.Event) -> None:
        self.app = app
        self.listening = listening

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_read = False

        async def observed_receive() -> Message:
            nonlocal body_read
            if body_read:
                self.listening.set()
            message = await receive()
            body_read = message["type"] == "http.request" and not message.get("more_body", False)
            return message

        await self.app(scope, observed_receive, send)


def test_probes_and_models(embedder: httpx.Client) -> None:
    assert embedder.get("/healthz").json() == {"status": "ok"}
    ready = embedder.get("/readyz").json()
    assert ready == {
        "status": "ready",
        "model": "efficientnet-lite0",
        "provider": "CPUExecutionProvider",
    }
    models = embedder.get("/v1/models").json()["models"]
    assert [(m["name"], m["embedding_dim"], m["default"], m["loaded"]) for m in models] == [
        ("efficientnet-lite0", 1280, True, True)
    ]
    assert models[0]["provider"] == "CPUExecutionProvider"
    # how dedup decides for this model's images: the shared table's rule, shown where the model is
    assert models[0]["dedup"] == {"threshold": 0.9, "candidate_threshold": 0.5}
    assert "/v1/embed" in embedder.get("/openapi.json").json()["paths"]
    assert embedder.get("/docs").status_code == 200


def test_embed_one_image(embedder: httpx.Client) -> None:
    data = photo_bytes("coffee.png")
    response = post_images(embedder, data, top_k=3)
    assert response.status_code == 200
    body = response.json()
    result = body["results"][0]
    assert body["model"] == result["model"] == "efficientnet-lite0"
    assert result["dim"] == len(result["embedding"]) == 1280
    assert np.linalg.norm(result["embedding"]) == pytest.approx(1.0, rel=1e-4)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(result["phash"]) == 16 and int(result["phash"], 16) >= 0
    assert (result["width"], result["height"], result["format"]) == (600, 400, "JPEG")
    assert result["labels"][0]["label"] == "espresso" and len(result["labels"]) == 3


def test_base64_encoding_carries_the_same_vector(embedder: httpx.Client) -> None:
    data = photo_bytes("chelsea.png")
    floats = post_images(embedder, data).json()["results"][0]["embedding"]
    packed = post_images(embedder, data, encoding="base64").json()["results"][0]["embedding"]
    unpacked = np.frombuffer(base64.b64decode(packed), dtype="<f4")
    np.testing.assert_allclose(unpacked, floats, rtol=1e-6)


def test_json_with_base64_data_and_object_keys(
    embedder: httpx.Client, embedder_settings: SettingsFactory
) -> None:
    stored = photo_bytes("rocket.jpg")
    key = hashlib.sha256(stored).hexdigest()
    LocalFolderStore(embedder_settings().storage.dir).put(key, stored)
    inline = stored
    response = embedder.post(
        "/v1/embed",
        json={
            "images": [{"key": key}, {"data": base64.b64encode(inline).decode()}, {"key": "f" * 64}]
        },
    )
    assert response.status_code == 200
    by_key, by_data, missing = response.json()["results"]
    assert by_key["sha256"] == by_data["sha256"] == key
    np.testing.assert_allclose(by_key["embedding"], by_data["embedding"], atol=1e-6)
    assert missing["error"]["code"] == "object_not_found"


def test_a_bad_image_fails_alone(embedder: httpx.Client) -> None:
    response = post_images(
        embedder, photo_bytes("coffee.png"), b"not an image", photo_bytes("camera.png")
    )
    assert response.status_code == 200
    good, bad, other = response.json()["results"]
    assert good["dim"] == other["dim"] == 1280
    assert bad == {
        "index": 1,
        "error": {"code": "unsupported_image_type", "message": bad["error"]["message"]},
        "status": 415,  # the status this image alone would have got, kept by every caller
    }


BAD_INPUTS = {
    "empty": (b"", 400, "empty_image"),
    "unsupported": (encode(solid((1, 2, 3)), "BMP"), 415, "unsupported_image_type"),
    "corrupt": (b"\xff\xd8\xff\xe0" + b"junk" * 50, 422, "corrupt_image"),
    "truncated": (encode(noise_image((256, 256)), "JPEG")[:3000], 422, "truncated_image"),
    "zero-size": (png_with_header(0, 64), 422, "zero_size_image"),
    "bomb": (png_with_header(40_000, 40_000), 422, "decompression_bomb"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_every_bad_input_gets_its_4xx_and_the_service_stays_up(
    embedder: httpx.Client, case: str
) -> None:
    data, status, code = BAD_INPUTS[case]
    response = post_images(embedder, data)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert post_images(embedder, photo_bytes("coffee.png")).status_code == 200
    assert embedder.get("/healthz").status_code == 200


def test_too_large_image_and_request(embedder_settings: SettingsFactory) -> None:
    settings = embedder_settings(images={"max_bytes": 50_000}, max_request_bytes=400_000)
    big = encode(noise_image((200, 200)), "PNG")  # ~120 KB
    huge = encode(noise_image((400, 400)), "PNG")  # ~480 KB
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = post_images(client, big)
        assert (response.status_code, response.json()["error"]["code"]) == (413, "image_too_large")
        response = post_images(client, huge)
        assert (response.status_code, response.json()["error"]["code"]) == (
            413,
            "request_too_large",
        )
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "request_kwargs, status, code",
    [
        (
            {"content": b"{}", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "invalid_json",
        ),
        ({"json": {"images": []}}, 422, "invalid_request"),
        ({"json": {"images": [{"data": "a", "key": "b"}]}}, 422, "invalid_request"),
        ({"json": {"images": [{"key": "../../etc/passwd"}]}}, 422, "invalid_request"),
        ({"json": {"images": [{"data": "***"}]}}, 422, "invalid_base64"),
        ({"json": {"images": [{"data": "aGk="}], "model": "nope"}}, 404, "unknown_model"),
        ({"json": {"images": [{"data": "aGk="}], "top_k": 500}}, 422, "invalid_request"),
        ({"json": {"images": [{"data": "aGk="}], "encoding": "hex"}}, 422, "invalid_request"),
        ({"files": [("wrong_field", ("a.jpg", b"x"))]}, 422, "invalid_request"),
    ],
)
def test_malformed_requests_get_a_4xx(
    embedder: httpx.Client, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = embedder.post("/v1/embed", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_too_many_images_in_one_request(embedder_settings: SettingsFactory) -> None:
    settings = embedder_settings(max_images_per_request=2)
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = post_images(client, *[photo_bytes("coffee.png")] * 3)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")
        assert "Too many files" in response.json()["error"]["message"]
        json_images = [{"data": base64.b64encode(photo_bytes("coffee.png")).decode()}] * 3
        response = client.post("/v1/embed", json={"images": json_images})
        error = response.json()["error"]
        assert (response.status_code, error["code"], error["field"]) == (
            422,
            "invalid_request",
            "images",
        )


def test_concurrent_callers_each_get_their_own_result(embedder_settings: SettingsFactory) -> None:
    """Nothing is kept between calls here, so every image goes through the micro-batcher."""
    with (
        live_server(create_app(embedder_settings(recent_outputs=0))) as url,
        httpx.Client(base_url=url, timeout=60) as embedder,
    ):
        _each_gets_its_own_result(embedder)


def _each_gets_its_own_result(embedder: httpx.Client) -> None:
    images = [encode(noise_image((96, 96), seed=i), "PNG") for i in range(6)]
    images += [photo_bytes(n) for n in ("coffee.png", "chelsea.png", "rocket.jpg", "camera.png")]
    expected = {}
    for data in images:
        result = post_images(embedder, data).json()["results"][0]
        expected[result["sha256"]] = np.array(result["embedding"])
    jobs = [images[i % len(images)] for i in range(48)]
    with ThreadPoolExecutor(16) as threads:
        responses = list(threads.map(lambda d: post_images(embedder, d), jobs))
    for data, response in zip(jobs, responses, strict=True):
        result = response.json()["results"][0]
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        np.testing.assert_allclose(result["embedding"], expected[result["sha256"]], atol=1e-5)
    assert metric(embedder, "seavl_embedder_batch_size_count") > 0
    assert metric(embedder, "seavl_embedder_batch_size_sum") >= 58


def test_full_queue_answers_429_with_retry_after(embedder_settings: SettingsFactory) -> None:
    settings = embedder_settings(batching={"max_queue_images": 2})
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = post_images(client, *[photo_bytes("coffee.png")] * 3)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "overloaded"
        assert post_images(client, photo_bytes("coffee.png")).status_code == 200


def test_a_request_whose_client_left_is_dropped_before_inference(
    embedder_settings: SettingsFactory,
) -> None:
    """A lone image waits max_wait for company; its client hangs up meanwhile."""
    settings = embedder_settings(batching={"max_wait_ms": 1500, "max_batch_size": 64})
    body = photo_bytes("chelsea.png")
    boundary = "seavlboundary"
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    app = create_app(settings)
    listening = threading.Event()
    app.add_middleware(HangUpListener, listening=listening)
    with live_server(app) as url, httpx.Client(base_url=url) as client:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(
                (
                    "POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Length: {len(payload)}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
                ).encode()
                + payload
            )
            assert listening.wait(timeout=10)  # queued; the batch stays open for 1.5 s
        wait_for(lambda: metric(client, "seavl_embedder_dropped_images_total") >= 1, timeout=10)
        assert (
            metric(client, "seavl_embedder_dropped_images_total", model="efficientnet-lite0") == 1
        )
        assert metric(client, "seavl_embedder_batch_size_count") == 0  # no inference ran for it
        assert post_images(client, body).status_code == 200
        assert metric(client, "seavl_embedder_batch_size_count") == 1
