"""One error shape for every service: `{"error": {"code": ..., "message": ...}}`.

Services raise `ServiceError` (or a subclass) and `install_error_handlers` turns it, FastAPI's
validation errors and stray HTTP exceptions into that shape, so a client parses one format.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.request_ids import request_id_headers

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """What every 4xx and 5xx of seavl carries."""

    error: ErrorBody


class ServiceError(Exception):
    """An error with an HTTP status, a stable machine code and a message for people."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.details = details
        self.retry_after_seconds = retry_after_seconds
        self.headers: dict[str, str] = {}

    def body(self) -> ErrorBody:
        return ErrorBody(
            code=self.code, message=self.message, field=self.field, details=self.details
        )

    def to_response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.retry_after_seconds is not None:
            headers["Retry-After"] = str(self.retry_after_seconds)
        content = ErrorResponse(error=self.body()).model_dump(exclude_none=True)
        return JSONResponse(status_code=self.status_code, content=content, headers=headers)


def ensure_at_most(count: int, limit: int, field: str) -> None:
    """Requests carry bounded work: `too_many_<field>` (422) past the limit."""
    if count > limit:
        raise ServiceError(
            422,
            f"too_many_{field}",
            f"at most {limit} {field} per request, got {count}",
            field=field,
        )


class OverloadedError(ServiceError):
    """The service's bounded queue is full: the client should back off and retry."""

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(429, "overloaded", message, retry_after_seconds=retry_after_seconds)


class UnavailableError(ServiceError):
    """A dependency (model, store, peer service) cannot serve right now."""

    def __init__(self, message: str, retry_after_seconds: int = 5) -> None:
        super().__init__(503, "unavailable", message, retry_after_seconds=retry_after_seconds)


# Besides a field's name, pydantic's `loc` holds the part of the request and the member of a
# union it tried ("list[float]", "str", "function-after[...]"): neither is a field.
LOCATION_PARTS = frozenset({"body", "query", "form", "path", "header", "cookie"})
TYPE_TAGS = frozenset({"str", "int", "float", "bool"})
# What a constrained string must look like, in words; filled in by `described_pattern`.
PATTERN_WORDS: dict[str, str] = {}


def described_pattern(pattern: str, words: str) -> str:
    """`pattern`, registered with the words a 422 uses for a value that does not match it."""
    PATTERN_WORDS[pattern] = words
    return pattern


def _validation_field(error: dict[str, Any]) -> str:
    location = [
        str(part)
        for part in error.get("loc", ())
        if not (
            isinstance(part, str)
            and (part in LOCATION_PARTS or part in TYPE_TAGS or "[" in part or "-" in part)
        )
    ]
    return ".".join(location)


def _choices(pattern: str) -> str | None:
    """The words of an alternation pattern such as `^(queued|done)$`, if it is one."""
    found = re.fullmatch(r"\^\(([\w|]+)\)\$", pattern)
    return ", ".join(found.group(1).split("|")) if found else None


def _problem(error: dict[str, Any]) -> str:
    """What is wrong with a value, in seavl's words (pydantic's own name its internals)."""
    kind = str(error.get("type", ""))
    context: dict[str, Any] = error.get("ctx") or {}
    message = str(error.get("msg", "is not valid"))
    limits = {
        "greater_than": "must be more than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
        "string_too_short": "must be at least {min_length} characters",
        "string_too_long": "must be at most {max_length} characters",
        "too_short": "must hold at least {min_length} items",
        "too_long": "must hold at most {max_length} items",
        "enum": "must be one of {expected}",
        "literal_error": "must be one of {expected}",
    }
    kinds = {
        "missing": "is required",
        "extra_forbidden": "is not a field of this request",
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "finite_number": "must be a finite number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be text",
        "list_type": "must be a list",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "json_invalid": "is not valid JSON",
        "url_parsing": "must be a URL",
    }
    if kind in limits:
        return limits[kind].format(**context)
    if kind in kinds:
        return kinds[kind]
    if kind == "string_pattern_mismatch":
        pattern = str(context.get("pattern", ""))
        words = PATTERN_WORDS.get(pattern) or _choices(pattern)
        return f"must be {words}" if words else f"does not have the accepted form {pattern}"
    if kind in ("value_error", "assertion_error"):
        return message.split(", ", 1)[1] if ", " in message else message
    return "is not valid"


def invalid_request(errors: Sequence[Any]) -> ServiceError:
    """422 `invalid_request` naming the first problem of a validation, with all in details."""
    problems = [(_validation_field(e), _problem(e)) for e in errors] or [("", "invalid request")]
    field, first = problems[0]
    message = f"{field} {first}" if field else first
    details = [{"field": name, "message": problem} for name, problem in problems]
    return ServiceError(422, "invalid_request", message, field=field or None, details=details)


def validated(model: type[Model], data: Any) -> Model:
    """`data` as `model`, or the 422 a request body that fails validation gets."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from exc


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid_request(list(exc.errors())).to_response()


async def _handle_service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return exc.to_response()


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def _allowed_methods(request: Request) -> str:
    """The methods the app's OpenAPI documents for this path, as `Allow` must list them. A path
    written out in full (`/v1/images/captions`) is that route's alone, even where a template
    with a parameter (`/v1/images/{image_id}`) would also match it."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    path = request.url.path
    matching = [t for t in paths if _template_pattern(t).fullmatch(path)]
    literal = [t for t in matching if "{" not in t]
    methods = {
        m.upper() for t in literal or matching for m in paths[t] if m.upper() in HTTP_METHODS
    }
    return ", ".join(sorted(methods))


async def _handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
    }.get(exc.status_code, "http_error")
    error = ServiceError(exc.status_code, code, str(exc.detail))
    error.headers = dict(exc.headers or {})
    if exc.status_code == 405:
        error.headers["Allow"] = _allowed_methods(request)
    return error.to_response()


async def _handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    error = ServiceError(500, "internal_error", "an unexpected error occurred")
    # Starlette raises the exception again after this answer and uvicorn then closes the
    # connection; saying so makes the client's next request open a new one (measured: without
    # it, the next request on the kept-alive connection met "Connection reset by peer").
    error.headers["Connection"] = "close"
    # answered outside the middlewares: the request id is added here, as they add it elsewhere
    error.headers.update(request_id_headers())
    return error.to_response()


async def _handle_data_error(_: Request, exc: Exception) -> JSONResponse:
    """A value the database cannot store (PostgreSQL refuses a NUL character in text, a number
    beyond its column): the request's fault, said as such; the transaction was rolled back."""
    logger.info("refused a value the database cannot store: %s", exc)
    return ServiceError(
        422, "invalid_request", "a value cannot be stored (a NUL character, or a number too large)"
    ).to_response()


def install_error_handlers(app: FastAPI) -> None:
    """Makes every error of `app` answer in the common JSON shape."""
    app.add_exception_handler(ServiceError, _handle_service_error)
    app.add_exception_handler(DataError, _handle_data_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_exception_handler(Exception, _handle_unexpected)
