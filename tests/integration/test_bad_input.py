"""Inputs an attacker sends (huge integers, deep JSON, names that fail a later check, huge
bodies) get a 4xx that says what is wrong in our words, never a 500."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.clients import ServiceClientSettings
from services.filter.app import create_app as create_filter
from services.filter.config import FilterSettings
from services.gateway.auth import Role
from tests.helpers import live_server, migrated_sqlite, photo_bytes
from tests.integration.gateway_stack import Stack, running_stack

BEYOND_INT64 = 2**63
DEEP_JSON = b"[" * 100_000
PYDANTIC_WORDS = ("Value error", "String should", "Input should", "pydantic", "errors.pydantic")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    error: dict[str, str] = response.json()["error"]
    assert not [word for word in PYDANTIC_WORDS if word in response.text], response.text
    return error


@pytest.fixture
def filter_service(tmp_path: Path) -> Iterator[httpx.Client]:
    settings = FilterSettings(
        database_url=migrated_sqlite(tmp_path / "filter.db"), max_request_bytes=1024 * 1024
    )
    with (
        live_server(create_filter(settings)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        created = client.post("/v1/reference-sets", json={"name": "sea", "model": "m", "dim": 4})
        assert created.status_code == 201
        yield client


def test_filter_refuses_integers_past_int64(filter_service: httpx.Client) -> None:
    deleted = filter_service.delete(f"/v1/reference-sets/sea/references/{BEYOND_INT64}")
    assert_error(deleted, 422, "invalid_request")
    applied = filter_service.post(f"/v1/reference-sets/sea/calibrations/{BEYOND_INT64}/apply")
    assert_error(applied, 422, "invalid_request")
    huge_dim = {"name": "huge", "model": "m", "dim": 2**63 - 1}
    error = assert_error(
        filter_service.post("/v1/reference-sets", json=huge_dim), 422, "invalid_request"
    )
    assert error["field"] == "dim"
    assert filter_service.get("/v1/reference-sets/huge").status_code == 404


def test_filter_bounds_its_request_body(filter_service: httpx.Client) -> None:
    vector = base64.b64encode(b"\x00\x00\x80\x3f" * 4).decode()
    body = {"set": "sea", "vectors": [vector] * 60_000}  # ~2 MB of JSON
    assert_error(filter_service.post("/v1/score", json=body), 413, "request_too_large")


def test_validation_messages_are_ours(filter_service: httpx.Client) -> None:
    error = assert_error(
        filter_service.post("/v1/reference-sets", json={"name": "a b", "model": "m"}),
        422,
        "invalid_request",
    )
    assert error["field"] == "name" and "letters" in error["message"]
    error = assert_error(
        filter_service.post("/v1/reference-sets/sea/references", json={"references": [{}]}),
        422,
        "invalid_request",
    )
    assert "exactly one of" in error["message"]


@pytest.fixture
def stack(live_embedder: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder) as running:
        yield running


def test_gateway_refuses_what_would_fail_later(stack: Stack) -> None:
    validator = stack.as_role(Role.VALIDATOR)
    page = stack.gateway.get("/v1/images", params={"offset": BEYOND_INT64}, headers=validator)
    assert assert_error(page, 422, "invalid_request")["field"] == "offset"
    bad_model = stack.gateway.post(
        "/v1/dedup", json={"embedding": [1, 1, 1, 1], "model": "a b"}, headers=validator
    )
    assert assert_error(bad_model, 422, "invalid_request")["field"] == "model"
    deep = stack.gateway.post(
        "/v1/dedup",
        content=DEEP_JSON,
        headers={**validator, "content-type": "application/json"},
    )
    assert_error(deep, 400, "invalid_json")
    many = stack.upload(photo_bytes("coffee.png"), countries=",".join(["TH"] * 12))
    assert assert_error(many, 422, "invalid_request")["field"] == "countries"


def test_embedder_refuses_deeply_nested_json(live_embedder: str) -> None:
    answer = httpx.post(
        f"{live_embedder}/v1/embed",
        content=DEEP_JSON,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert_error(answer, 400, "invalid_json")


def test_images_for_a_model_the_embedder_does_not_serve(live_embedder: str, tmp_path: Path) -> None:
    settings = FilterSettings(
        database_url=migrated_sqlite(tmp_path / "filter.db"),
        embedder=ServiceClientSettings(url=live_embedder),
    )
    with live_server(create_filter(settings)) as url, httpx.Client(base_url=url) as client:
        client.post("/v1/reference-sets", json={"name": "clip", "model": "clip-vit-b32"})
        image = base64.b64encode(photo_bytes("coffee.png")).decode()
        added = client.post(
            "/v1/reference-sets/clip/references", json={"references": [{"image": image}]}
        )
    assert_error(added, 409, "model_not_served")
