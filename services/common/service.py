"""The frame every seavl service shares: app, error shape, probes, metrics, state dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, cast

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from services.common.docs import add_offline_docs
from services.common.errors import ErrorResponse, install_error_handlers
from services.common.http import (
    BodySizeLimitMiddleware,
    HttpMetrics,
    MetricsMiddleware,
    RequestIdMiddleware,
    ServiceTokenMiddleware,
    add_probe_routes,
    register_process_metrics,
)
from services.common.openapi import document_shared_errors
from services.common.settings import SERVICE_TOKEN_VARIABLE, SeavlSettings, is_loopback

T = TypeVar("T")
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
SERVICE_TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No service token, or not this deployment's"}
}


class UnguardedBindError(RuntimeError):
    """An internal service asked to listen beyond loopback with nothing to refuse callers by."""


def from_app_state(attribute: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A FastAPI dependency for what the lifespan put on `app.state` (tests override it); a
    coroutine, so FastAPI runs it on the event loop instead of sending it to a thread."""

    async def dependency(request: Request) -> T:
        return cast(T, getattr(request.app.state, attribute))

    dependency.__name__ = f"get_{attribute}"
    return dependency


async def threads_finished() -> None:
    """Waits for the work this loop gave to threads (`asyncio.to_thread`): a service stopping
    cancels its tasks, not their threads, and a query still running in one would hand its
    connection back to a pool already disposed, left open until the garbage collector finds it.
    Called first in a lifespan's shutdown, before the engine and stores are closed."""
    await asyncio.get_running_loop().shutdown_default_executor()


def single_threaded_blas() -> None:
    """Services do small vector maths per request: BLAS threads only add wake-up latency and
    spin on cores the requests (and ONNX Runtime) need (measured: the p99 of a dedup check was
    13 ms with them, 2.4 ms without; dedup's CPU per pipeline image fell from 8 to 1.2 ms)."""
    threadpool_limits(limits=1, user_api="blas")


def build_service_app(
    name: str,
    summary: str,
    router: APIRouter,
    settings: SeavlSettings,
    registry: CollectorRegistry,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Callable[[FastAPI], Readiness],
    max_body_bytes: int | None = None,
    public: bool = False,
) -> FastAPI:
    """A service's FastAPI app with the common error shape, probes, HTTP and process metrics,
    and request ids.

    Every service but the `public` one (the gateway) answers only calls carrying the service
    token when one is set, and without one refuses to be built to listen beyond loopback.
    """
    token = None if public else settings.service_token
    if not public and token is None and not is_loopback(settings.server.host):
        raise UnguardedBindError(
            f"the {name} would listen on {settings.server.host} without a service token, open "
            f"to anyone who reaches it: set {SERVICE_TOKEN_VARIABLE} (the same on every "
            "service, the gateway and the workers), or listen on 127.0.0.1"
        )
    app = FastAPI(
        title=f"seavl {name}",
        version="0.1.0",
        summary=summary,
        lifespan=lifespan,
        docs_url=None,  # served by add_offline_docs, without a CDN
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router, responses=None if token is None else SERVICE_TOKEN_ERRORS)
    register_process_metrics(registry)
    add_probe_routes(app, registry, readiness(app))
    document_shared_errors(app, max_body_bytes)
    if max_body_bytes is not None:
        app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=max_body_bytes)
    if token is not None:  # outside the body limit: a call without it is refused unread
        app.add_middleware(ServiceTokenMiddleware, token=token)
    # added later = further out: the metrics count every answer, the 401s and 413s included,
    # and every answer (and the log lines written for it) carries the request id
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(name, registry))
    app.add_middleware(RequestIdMiddleware, service=name)
    return app
