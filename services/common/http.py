"""What every service's HTTP surface shares: metrics, health probes, body limits, disconnects.

The middlewares are plain ASGI (not BaseHTTPMiddleware) so that a route can still hear the
client's `http.disconnect` while it waits for work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import FastAPI, Path, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ErrorBody, ErrorResponse, ServiceError
from services.common.request_ids import (
    REQUEST_ID_HEADER,
    new_request_id,
    request_context,
    valid_request_id,
)

T = TypeVar("T")

# Ids and offsets are 64-bit signed integers in PostgreSQL and SQLite: a larger number in a path
# or a query is the caller's mistake, refused before it reaches the database.
INT64_MAX = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=INT64_MAX, description="a row id")]


def read_json(body: bytes) -> Any:
    """A request body parsed as JSON, or a 400 `invalid_json` (orjson refuses nesting deeper
    than 1024 levels, where the standard library would exhaust the stack)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


class HttpMetrics:
    """Request counts and latency per route, in the app's own registry (tests make many apps).

    One name for every service, told apart by the `service` label, so one query (or alert)
    covers them all."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.requests = Counter(
            "seavl_http_requests",
            "HTTP requests answered, by service, route, method and status",
            ["service", "route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "seavl_http_request_seconds",
            "HTTP request latency in seconds, by service and route",
            ["service", "route", "method"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


def register_process_metrics(registry: CollectorRegistry) -> None:
    """The process' memory, CPU, open files, Python version and garbage collections, which
    prometheus_client serves only from its default registry."""
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)


class HttpMiddleware:
    """An ASGI middleware of HTTP requests; other scopes (lifespan) pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestIdMiddleware(HttpMiddleware):
    """Takes `X-Request-ID` from the request when it is valid (printable ASCII, at most 128
    characters), or makes one; runs the request with it (and the service's name) and answers
    it in `X-Request-ID`."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        super().__init__(app)
        self.service = service

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        header_name = REQUEST_ID_HEADER.lower().encode()
        request_id = dict(scope.get("headers", [])).get(header_name, b"").decode("latin-1")
        if not valid_request_id(request_id):
            request_id = new_request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                given = message.get("headers", [])
                message["headers"] = [*given, (header_name, request_id.encode())]
            await send(message)

        with request_context(request_id, self.service):
            await self.app(scope, receive, send_with_id)


class MetricsMiddleware(HttpMiddleware):
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            method = str(scope.get("method", ""))
            service = self.metrics.service
            self.metrics.requests.labels(service, route_path, method, str(status)).inc()
            self.metrics.latency.labels(service, route_path, method).observe(
                time.perf_counter() - started
            )


class BodySizeLimitMiddleware(HttpMiddleware):
    """Answers 413 as soon as a request body passes `max_body_bytes`, while it streams in."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        super().__init__(app)
        self.max_body_bytes = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(send)
            return
        received = 0
        too_large = response_started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if too_large:  # FastAPI's JSON parsing catches the refusal and answers 400: ours wins
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = ErrorResponse(
            error=ErrorBody(
                code="request_too_large",
                message=f"the request body is over the limit of {self.max_body_bytes} bytes",
            )
        ).model_dump_json(exclude_none=True)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _BodyTooLarge(Exception):
    pass


# What a caller without the service token may still ask: the probes and Prometheus' scrape.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
SERVICE_TOKEN_CHALLENGE = (b"www-authenticate", b'Bearer realm="seavl services"')


class ServiceTokenMiddleware(HttpMiddleware):
    """Refuses every call but `OPEN_PATHS` unless it carries the deployment's service token as
    `Authorization: Bearer …` (401 `service_token_required` / `service_token_invalid`), before
    the body is read: only the gateway and the workers hold the token."""

    def __init__(self, app: ASGIApp, token: SecretStr) -> None:
        super().__init__(app)
        self.expected = token.get_secret_value().encode()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, given = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            await self._refuse(
                send,
                "service_token_required",
                "this service answers only calls with the deployment's service token, sent as "
                "'Authorization: Bearer <token>' (people use the gateway)",
            )
        elif not hmac.compare_digest(given.strip(), self.expected):
            await self._refuse(
                send, "service_token_invalid", "the service token sent is not this deployment's"
            )
        else:
            await self.app(scope, receive, send)

    async def _refuse(self, send: Send, code: str, message: str) -> None:
        body = ErrorResponse(error=ErrorBody(code=code, message=message))
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), SERVICE_TOKEN_CHALLENGE],
            }
        )
        await send(
            {"type": "http.response.body", "body": body.model_dump_json(exclude_none=True).encode()}
        )


BINARY = {"type": "string", "format": "binary", "minLength": 1}


def multipart_body(
    file_field: str,
    fields: dict[str, Any] | None = None,
    many_files: bool = False,
    other_content: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`openapi_extra` for a route that parses its multipart form itself, so /docs shows it."""
    # several files are answered one result each (an empty one gets its own error); one file
    # must not be empty
    many = {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}
    file_schema = many if many_files else BINARY
    content = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [file_field],
                "properties": {file_field: file_schema, **(fields or {})},
            }
        },
        **(other_content or {}),
    }
    return {"requestBody": {"required": True, "content": content}}


class Readiness(BaseModel):
    """What `/readyz` answers: ready or not, with what each dependency said."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description="'ready' or 'not_ready'")


def add_probe_routes(
    app: FastAPI,
    registry: CollectorRegistry,
    readiness: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]],
) -> None:
    """`/healthz` (the process answers), `/readyz` (it can serve) and `/metrics` (Prometheus)."""

    @app.get("/healthz", tags=["probes"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["probes"],
        summary="Ready to serve: models loaded, dependencies up",
        responses={200: {"model": Readiness}, 503: {"model": Readiness}},
    )
    async def readyz() -> Response:
        ready, details = await readiness()
        body = {"status": "ready" if ready else "not_ready", **details}
        headers = {} if ready else {"Retry-After": "5"}
        return Response(
            json.dumps(body),
            status_code=200 if ready else 503,
            media_type="application/json",
            headers=headers,
        )

    @app.get(
        "/metrics",
        tags=["probes"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def wait_unless_disconnected(
    request: Request, work: Iterable[asyncio.Future[T]]
) -> list[T] | None:
    """Awaits every future; if the client hangs up first, cancels them and returns None.

    The request body must already be read, so the next `receive()` can only be a disconnect.
    """
    futures = list(work)
    gathered: asyncio.Future[list[T]] = asyncio.gather(*futures)
    watcher: asyncio.Future[Message] = asyncio.ensure_future(request.receive())
    waiting: set[asyncio.Future[Any]] = {gathered, watcher}
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if gathered in done:
            return gathered.result()
        message = watcher.result()
        if message.get("type") == "http.disconnect":
            for future in futures:
                future.cancel()
            gathered.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gathered
            return None
        return await gathered
    finally:
        if not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
