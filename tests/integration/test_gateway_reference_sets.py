"""Reference sets and calibrations through the gateway: admins manage them (the filter itself
answers only the service token), everyone else is refused, the filter's errors come back as
the filter gave them."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from services.common.clients import FilterClient, ServiceClientSettings
from services.common.errors import UnavailableError
from services.common.reference_sets import AddReferencesRequest, NewReference
from services.gateway.auth import Role
from tests.helpers import live_server, photo_bytes
from tests.integration.gateway_stack import Stack, running_stack

TOKEN = secrets.token_hex(32)
CAT = base64.b64encode(photo_bytes("chelsea.png")).decode()
COFFEE = base64.b64encode(photo_bytes("coffee.png")).decode()


@pytest.fixture
def stack(database_url: str, tmp_path: Path, live_embedder: str) -> Iterator[Stack]:
    with running_stack(
        database_url, tmp_path, live_embedder, with_references=False, service_token=TOKEN
    ) as running:
        yield running


def as_admin(stack: Stack, method: str, path: str, body: Any = None) -> httpx.Response:
    return stack.gateway.request(method, path, json=body, headers=stack.as_role(Role.ADMIN))


def error_code(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("error", {}).get("code")


def test_admins_build_a_reference_set_that_scores_uploads(stack: Stack) -> None:
    created = as_admin(
        stack, "POST", "/v1/reference-sets", {"name": "default", "model": "efficientnet-lite0"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["references"] == 0
    again = as_admin(
        stack, "POST", "/v1/reference-sets", {"name": "default", "model": "efficientnet-lite0"}
    )
    assert error_code(again) == (409, "set_exists")
    added = as_admin(
        stack,
        "POST",
        "/v1/reference-sets/default/references",
        {"references": [{"image": CAT, "country": "TH"}, {"image": COFFEE, "country": "VN"}]},
    )
    assert added.status_code == 201, added.text
    first_id, _ = added.json()["ids"]
    assert added.json()["references"] == 2
    wrong_dim = as_admin(
        stack, "POST", "/v1/reference-sets/default/references", {"references": [{"vector": [1, 0]}]}
    )
    assert error_code(wrong_dim) == (422, "dimension_mismatch")
    described = as_admin(stack, "GET", "/v1/reference-sets/default").json()
    assert (described["dim"], described["countries"]) == (1280, {"TH": 1, "VN": 1})
    assert [s["name"] for s in as_admin(stack, "GET", "/v1/reference-sets").json()["sets"]] == [
        "default"
    ]

    upload = stack.upload(photo_bytes("chelsea.png"), countries="TH")
    done = stack.wait_done(upload.json()["id"])
    assert done["status"] == "done" and done["score"] is not None, done  # the pipeline uses it

    removed = as_admin(stack, "DELETE", f"/v1/reference-sets/default/references/{first_id}")
    assert removed.status_code == 204
    assert as_admin(stack, "GET", "/v1/reference-sets/default").json()["countries"] == {"VN": 1}
    gone = as_admin(stack, "DELETE", f"/v1/reference-sets/default/references/{first_id}")
    assert error_code(gone) == (404, "unknown_reference")
    assert as_admin(stack, "DELETE", "/v1/reference-sets/default").status_code == 204
    assert error_code(as_admin(stack, "GET", "/v1/reference-sets/default")) == (
        404,
        "unknown_set",
    )


def test_admins_calibrate_a_set_and_apply_the_threshold(stack: Stack) -> None:
    as_admin(stack, "POST", "/v1/reference-sets", {"name": "tiny", "model": "efficientnet-lite0"})
    as_admin(
        stack, "POST", "/v1/reference-sets/tiny/references", {"references": [{"vector": [1, 0]}]}
    )
    samples = [
        {"vector": [1, 0], "label": "yes"},
        {"vector": [0.6, 0.8], "label": "yes"},
        {"vector": [0, 1], "label": "no"},
    ]
    calibrated = as_admin(
        stack, "POST", "/v1/reference-sets/tiny/calibrations", {"samples": samples}
    )
    assert calibrated.status_code == 201, calibrated.text
    calibration = calibrated.json()
    assert calibration["samples"] == 3 and calibration["recommended_rho"] is not None
    listed = as_admin(stack, "GET", "/v1/reference-sets/tiny/calibrations").json()
    assert [c["id"] for c in listed["calibrations"]] == [calibration["id"]]
    applied = as_admin(
        stack, "POST", f"/v1/reference-sets/tiny/calibrations/{calibration['id']}/apply"
    )
    assert applied.status_code == 200, applied.text
    assert applied.json()["rho"] == calibration["recommended_rho"]
    assert applied.json()["rho_source"] == "calibration"
    unknown = as_admin(stack, "POST", "/v1/reference-sets/tiny/calibrations/99999/apply")
    assert error_code(unknown) == (404, "unknown_calibration")
    huge = as_admin(stack, "POST", f"/v1/reference-sets/tiny/calibrations/{2**63}/apply")
    assert huge.status_code == 422


def test_a_vector_beyond_float32_is_refused_as_the_filter_refuses_it(stack: Stack) -> None:
    as_admin(stack, "POST", "/v1/reference-sets", {"name": "tiny", "model": "efficientnet-lite0"})
    huge = {"references": [{"vector": [1.0, 1.7976931348623157e308]}]}
    refused = as_admin(stack, "POST", "/v1/reference-sets/tiny/references", huge)
    assert error_code(refused) == (422, "invalid_vector")
    assert as_admin(stack, "GET", "/v1/reference-sets/tiny").json()["references"] == 0


ROUTES = [
    ("GET", "/v1/reference-sets", None),
    ("POST", "/v1/reference-sets", {"name": "mine", "model": "efficientnet-lite0"}),
    ("GET", "/v1/reference-sets/kept", None),
    ("DELETE", "/v1/reference-sets/kept", None),
    ("POST", "/v1/reference-sets/kept/references", {"references": [{"vector": [0, 1]}]}),
    ("DELETE", "/v1/reference-sets/kept/references/1", None),
    (
        "POST",
        "/v1/reference-sets/kept/calibrations",
        {"samples": [{"vector": [1, 0], "label": "yes"}]},
    ),
    ("GET", "/v1/reference-sets/kept/calibrations", None),
    ("POST", "/v1/reference-sets/kept/calibrations/1/apply", None),
]


def test_only_admins_manage_reference_sets(stack: Stack) -> None:
    as_admin(stack, "POST", "/v1/reference-sets", {"name": "kept", "model": "efficientnet-lite0"})
    as_admin(
        stack, "POST", "/v1/reference-sets/kept/references", {"references": [{"vector": [1, 0]}]}
    )
    for method, path, body in ROUTES:
        for role in (Role.CONTRIBUTOR, Role.VALIDATOR):
            refused = stack.gateway.request(method, path, json=body, headers=stack.as_role(role))
            assert error_code(refused) == (403, "forbidden"), (method, path, role)
        anonymous = stack.gateway.request(method, path, json=body)
        assert error_code(anonymous) == (401, "unauthorized"), (method, path)
    kept = as_admin(stack, "GET", "/v1/reference-sets").json()["sets"]
    assert [(s["name"], s["references"]) for s in kept] == [("kept", 1)]
    assert as_admin(stack, "GET", "/v1/reference-sets/kept/calibrations").json() == {
        "calibrations": []
    }
    # "." and ".." name no set: they never reach another of the filter's routes (a URL would
    # resolve "/v1/reference-sets/.." to "/v1")
    for dots in ("%2E", "%2E%2E"):
        for method in ("GET", "DELETE"):
            answer = as_admin(stack, method, f"/v1/reference-sets/{dots}")
            assert error_code(answer) == (404, "unknown_set"), (method, dots)
    assert [s["name"] for s in as_admin(stack, "GET", "/v1/reference-sets").json()["sets"]] == [
        "kept"
    ]
    # the filter itself answers none of this without the service token
    direct = httpx.delete(f"{stack.settings.filter.url}/v1/reference-sets/kept")
    assert error_code(direct) == (401, "service_token_required")


def slow_filter() -> tuple[FastAPI, list[str]]:
    """A filter that holds its first answer to each route until the caller gives up, as one
    whose database is slow would: the caller cannot know whether the call was applied."""
    app = FastAPI()
    calls: list[str] = []

    async def hold_first(request: Request) -> None:
        calls.append(request.url.path)
        if calls.count(request.url.path) == 1:
            while not await request.is_disconnected():
                await asyncio.sleep(0.02)

    @app.post("/v1/reference-sets/{name}/references", status_code=201)
    async def add(name: str, request: Request) -> dict[str, Any]:
        await hold_first(request)
        return {"ids": [1], "references": 1}

    @app.get("/v1/reference-sets")
    async def listing(request: Request) -> dict[str, Any]:
        await hold_first(request)
        return {"sets": []}

    return app, calls


def test_a_write_the_filter_may_have_applied_is_not_sent_twice() -> None:
    """Adding references twice would weigh them twice in the set's mean; a read is retried."""
    app, calls = slow_filter()

    async def calls_through_a_client(url: str) -> None:
        client = FilterClient(
            ServiceClientSettings(url=url, timeout_seconds=0.5, attempts=3, backoff_seconds=0.01)
        )
        request = AddReferencesRequest(references=[NewReference(vector=[1.0, 0.0])])
        with pytest.raises(UnavailableError, match="may have applied"):
            await client.add_references("cats", request)
        assert calls == ["/v1/reference-sets/cats/references"]
        assert (await client.list_sets()).sets == []
        assert calls[1:] == ["/v1/reference-sets", "/v1/reference-sets"]
        await client.close()

    with live_server(app) as url:
        asyncio.run(calls_through_a_client(url))
