"""The dedup service refuses what would break it: huge vectors, endless models, huge bodies."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.dedup.app import create_app
from services.dedup.config import DedupSettings
from tests.helpers import live_server, migrated_sqlite


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def dedup(tmp_path: Path) -> Iterator[httpx.Client]:
    settings = DedupSettings(
        database_url=migrated_sqlite(tmp_path / "dedup.db"),
        qdrant_path=tmp_path / "vectors",
        max_dimensions=4096,
        max_collections=2,
        max_request_bytes=1024 * 1024,
    )
    with (
        live_server(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def insert(client: httpx.Client, name: str, model: str, dim: int) -> httpx.Response:
    vector = np.random.default_rng(int(sha(name)[:8], 16)).normal(size=dim).astype("<f4")
    packed = base64.b64encode(vector.tobytes()).decode()  # 65,537 numbers fit the body limit
    body: dict[str, Any] = {"id": sha(name), "model": model, "vector": packed}
    return client.post("/v1/dedup/insert", json=body)


def test_a_vector_past_the_dimension_bound_is_refused_and_nothing_is_made(
    dedup: httpx.Client,
) -> None:
    for dim in (65_537, 4097):  # past every service's bound, and past dedup's own setting
        response = insert(dedup, f"wide{dim}", "new-model", dim)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "dimension_too_large"
    assert "4096" in response.json()["error"]["message"]
    assert dedup.get("/v1/dedup/collections").json()["collections"] == []
    checked = dedup.post("/v1/dedup/check", json={"model": "m", "vectors": [[1.0] * 4097]})
    assert (checked.status_code, checked.json()["error"]["code"]) == (422, "dimension_too_large")
    assert insert(dedup, "fits", "new-model", 4096).status_code == 200


def test_models_past_the_collection_bound_are_refused_the_others_still_work(
    dedup: httpx.Client,
) -> None:
    assert insert(dedup, "a", "first", 8).status_code == 200
    assert insert(dedup, "b", "second", 8).status_code == 200
    refused = insert(dedup, "c", "third", 8)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "too_many_collections"
    models = {c["model"] for c in dedup.get("/v1/dedup/collections").json()["collections"]}
    assert models == {"first", "second"}
    assert insert(dedup, "d", "second", 8).json()["status"] == "inserted"
    paths = dedup.get("/openapi.json").json()["paths"]
    assert all(
        "409" in paths[p]["post"]["responses"]
        for p in ("/v1/dedup/insert", "/v1/dedup/insert-batch")
    )


def test_a_body_past_the_limit_is_refused_while_it_streams_in(dedup: httpx.Client) -> None:
    vectors = [[0.5] * 1024] * 256  # about 1.3 MB of JSON
    body = json.dumps({"model": "m", "vectors": vectors}).encode()
    assert len(body) > 1024 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds on what arrives
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    for content in (body, chunks()):
        response = dedup.post(
            "/v1/dedup/check", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
