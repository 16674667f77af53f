"""Calls between services when the peer fails, and the error answers every service shares.

The peers are real HTTP servers on 127.0.0.1 that fail the way a real peer or a proxy in front
of it does: a 503 or 429 for a moment, an answer cut off mid-way, a 500, an HTML error page.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from services.common.clients import ServiceClient, ServiceClientSettings
from services.common.errors import UnavailableError
from services.common.service import Readiness, build_service_app
from services.filter.app import create_app as create_filter
from services.filter.config import FilterSettings
from tests.helpers import free_port, live_server, migrated_sqlite, photo_bytes

SEAVL_OK = b'{"ok": true}'


def nginx_page(status: str) -> bytes:
    """The HTML page nginx answers with, in front of a service, when it refuses a call."""
    return f"<html><head><title>{status}</title></head><body>nginx</body></html>".encode()


class Ok(BaseModel):
    """What the fake peer answers once it works."""

    ok: bool


def seavl_error(code: str) -> bytes:
    return f'{{"error": {{"code": "{code}", "message": "try again"}}}}'.encode()


@dataclass
class Answer:
    """One answer of the fake peer."""

    status: int = 200
    body: bytes = SEAVL_OK
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    cut_off: bool = False  # starts a 200, sends a few bytes of it and hangs up


class CutOffResponse(Response):
    """A peer that dies mid-answer: the connection closes before the promised body is sent."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok": ', "more_body": True})
        # returning without the rest makes uvicorn close the connection


class FakePeer:
    """Answers every path with the next queued answer (a seavl 200 once they run out) and
    records when each request arrived."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = deque(answers)
        self.arrivals: list[float] = []
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self._answer, methods=["GET", "POST"])

    async def _answer(self, request: Request) -> Response:
        await request.body()
        self.arrivals.append(time.monotonic())
        answer = self.answers.popleft() if self.answers else Answer()
        if answer.cut_off:
            return CutOffResponse()
        return Response(
            answer.body,
            status_code=answer.status,
            media_type=answer.content_type,
            headers=answer.headers,
        )


def ask(peer: FakePeer, method: str, path: str, body: Any = None, **settings: Any) -> Ok:
    """One call through a client of `peer` that waits little between tries unless told
    otherwise."""
    fields: dict[str, Any] = {"attempts": 3, "backoff_seconds": 0.01, **settings}

    async def call(url: str) -> Ok:
        client = ServiceClient("peer", ServiceClientSettings(url=url, **fields))
        try:
            return await client.request(Ok, method, path, body)
        finally:
            await client.close()

    with live_server(peer.app) as url:
        return asyncio.run(call(url))


TRANSIENT = {
    "503 from a seavl peer": Answer(503, seavl_error("unavailable"), headers={"Retry-After": "5"}),
    "429 from an overloaded peer": Answer(
        429, seavl_error("overloaded"), headers={"Retry-After": "1"}
    ),
    "502 page from a proxy": Answer(502, nginx_page("502 Bad Gateway"), "text/html"),
    "answer cut off mid-way": Answer(cut_off=True),
}


@pytest.mark.parametrize("failure", sorted(TRANSIENT))
def test_a_transient_failure_is_retried_and_the_call_succeeds(failure: str) -> None:
    peer = FakePeer(TRANSIENT[failure])
    assert ask(peer, "POST", "/v1/work", {"n": 1}) == Ok(ok=True)
    assert len(peer.arrivals) == 2


def test_the_waits_between_tries_grow_as_configured() -> None:
    peer = FakePeer(*[Answer(503, seavl_error("unavailable"))] * 4)
    waits_configured = {"attempts": 5, "backoff_seconds": 0.2, "max_backoff_seconds": 0.5}
    assert ask(peer, "GET", "/v1/thing", **waits_configured) == Ok(ok=True)
    waits = [later - earlier for earlier, later in pairwise(peer.arrivals)]
    for wait, configured in zip(waits, [0.2, 0.4, 0.5, 0.5], strict=True):
        assert configured - 0.01 <= wait <= configured + 0.25, waits


def test_a_peer_failing_every_try_is_unavailable() -> None:
    peer = FakePeer(*[Answer(503, seavl_error("unavailable"))] * 3)
    with pytest.raises(UnavailableError) as raised:
        ask(peer, "POST", "/v1/work", {"n": 1}, attempts=3)
    error = raised.value
    assert (error.status_code, error.code, error.retry_after_seconds) == (503, "unavailable", 5)
    assert len(peer.arrivals) == 3


REFERENCE_IMAGE = base64.b64encode(photo_bytes("coffee.png")).decode()
UNREADABLE = {
    "500 from the peer": Answer(500, b"Traceback: password=hunter2 rejected", "text/plain"),
    "404 page from a proxy": Answer(404, nginx_page("404 Not Found"), "text/html"),
    "413 page from a proxy": Answer(413, nginx_page("413 Request Entity Too Large"), "text/html"),
    "404 from another app at that URL": Answer(404, b'{"detail": "Not Found"}'),
    "200 page from a proxy": Answer(200, b"<html><body>hunter2 portal</body></html>", "text/html"),
    "200 in another shape": Answer(200, b'{"vectors": []}'),
}


@pytest.mark.parametrize("failure", sorted(UNREADABLE))
def test_a_peer_answer_that_is_no_seavl_answer_is_our_503(failure: str, tmp_path: Path) -> None:
    """The filter embeds reference images through the embedder; here its "embedder" fails."""
    embedder = FakePeer(UNREADABLE[failure])
    with live_server(embedder.app) as embedder_url:
        settings = FilterSettings(
            database_url=migrated_sqlite(tmp_path / "filter.db"),
            embedder=ServiceClientSettings(url=embedder_url, attempts=2, backoff_seconds=0.01),
        )
        with (
            live_server(create_filter(settings)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            created = client.post(
                "/v1/reference-sets", json={"name": "sea", "model": "efficientnet-lite0"}
            )
            assert created.status_code == 201, created.text
            response = client.post(
                "/v1/reference-sets/sea/references",
                json={"references": [{"image": REFERENCE_IMAGE}]},
            )
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "unavailable" and error["message"].startswith("embedder ")
            assert int(response.headers["retry-after"]) > 0
            assert "hunter2" not in response.text and "<html" not in response.text
            assert client.get("/v1/reference-sets/sea").json()["references"] == 0
    assert len(embedder.arrivals) == 1  # none of these goes away by asking again at once


def probe_service() -> FastAPI:
    """A service built like every seavl service, with one route that fails unexpectedly."""
    router = APIRouter()

    @router.get("/v1/explode")
    def explode() -> None:
        raise RuntimeError("the database refused password=hunter2")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    def readiness(_: FastAPI) -> Readiness:
        async def ready() -> tuple[bool, dict[str, Any]]:
            return True, {}

        return ready

    return build_service_app(
        "probe",
        "One broken route.",
        router,
        FilterSettings(),
        CollectorRegistry(),
        lifespan,
        readiness,
    )


def test_an_unexpected_exception_is_a_500_internal_error_that_leaks_nothing() -> None:
    with live_server(probe_service()) as url, httpx.Client(base_url=url) as client:
        response = client.get("/v1/explode")
        assert response.status_code == 500
        assert response.json() == {
            "error": {"code": "internal_error", "message": "an unexpected error occurred"}
        }
        assert "hunter2" not in response.text and "RuntimeError" not in response.text
        assert client.get("/healthz").status_code == 200  # the next request gets through
        counted = (
            'seavl_http_requests_total{method="GET",route="/v1/explode",service="probe",'
            'status="500"}'
        )
        assert f"{counted} 1.0" in client.get("/metrics").text


def test_unknown_paths_and_wrong_methods_get_their_codes(tmp_path: Path) -> None:
    settings = FilterSettings(
        database_url=migrated_sqlite(tmp_path / "filter.db"),
        embedder=ServiceClientSettings(url=f"http://127.0.0.1:{free_port()}"),
    )
    with live_server(create_filter(settings)) as url, httpx.Client(base_url=url) as client:
        missing = client.get("/v1/no-such-thing")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        wrong = client.put("/v1/reference-sets/sea", json={})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")
        assert wrong.headers["allow"] == "DELETE, GET"
        assert client.get("/v1/score").headers["allow"] == "POST"
