"""The request id that ties one upload's log lines together, across services and jobs.

The gateway takes `X-Request-ID` from its caller (or makes one), every service takes it from the
call it answers (`services.common.http.RequestIdMiddleware`), and the id is held in a contextvar
for the work done on the request's behalf: its log lines (`services.common.logging`), its calls
to other services (`request_id_headers()`) and the jobs it queues (which carry it to the worker
that runs them).
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "seavl_request_id", default=None
)
# The service answering: one per process in production, several in one process in the tests.
_service: contextvars.ContextVar[str | None] = contextvars.ContextVar("seavl_service", default=None)


def current_request_id() -> str | None:
    """The id of the request (or job) this code runs for, if any."""
    return _request_id.get()


def current_service() -> str | None:
    """The service whose request this code answers, if any."""
    return _service.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str) -> bool:
    """Printable ASCII of at most 128 characters: anything else is not written into our logs
    or passed on."""
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii() and value.isprintable()


def request_id_headers() -> dict[str, str]:
    """The header that carries the current request id to another service (none without one)."""
    request_id = _request_id.get()
    return {} if request_id is None else {REQUEST_ID_HEADER: request_id}


@contextmanager
def request_context(request_id: str | None, service: str | None = None) -> Iterator[None]:
    """Runs the block on behalf of `request_id` (and as `service`, when given).

    When the block raises, the id stays set: whoever handles the exception further out in the
    same task (the 500 handler, uvicorn's error line, a job's retry loop) logs it with the id.
    Each request and each job runs in a task of its own, so it goes no further."""
    request_token = _request_id.set(request_id)
    service_token = None if service is None else _service.set(service)
    yield
    _request_id.reset(request_token)
    if service_token is not None:
        _service.reset(service_token)
