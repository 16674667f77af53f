"""Upload intake: the multipart form, its fields, and the image in it, validated and freed of
location data before anything else sees it."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

from fastapi import Request
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from services.common.errors import ServiceError, validated
from services.common.images import ImageInfo, ImageLimits, validate_image
from services.common.location import strip_location

FormModel = TypeVar("FormModel", bound=BaseModel)


def invalid(message: str, field: str | None = None) -> ServiceError:
    return ServiceError(422, "invalid_request", message, field=field)


async def read_form(request: Request) -> FormData:
    """The request's multipart form (one file, a few short fields); 415 for anything else."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ServiceError(415, "unsupported_media_type", "send multipart/form-data")
    return await request.form(max_files=1, max_fields=32, max_part_size=64 * 1024)


async def read_image_part(form: FormData, limits: ImageLimits) -> bytes:
    """The bytes of the form's `image` file, read up to one byte past the size limit (so the
    validation can tell a file too large without reading all of it)."""
    part = form.get("image")
    if not isinstance(part, UploadFile):
        raise invalid("send the image file in the multipart field 'image'", field="image")
    # from memory on the event loop (most uploads: starlette spools up to 1 MB in memory), from a
    # file rolled to disk in a thread
    return await part.read(limits.max_bytes + 1)


def form_fields(form: FormData, model: type[FormModel]) -> FormModel:
    """The form's fields besides the image, validated by `model`; unknown fields are refused.

    `countries` may come as several fields or comma-separated."""
    fields: dict[str, Any] = {}
    countries = [
        c.strip().upper()
        for v in form.getlist("countries")
        if isinstance(v, str)
        for c in v.split(",")
        if c.strip()
    ]
    if countries:
        fields["countries"] = countries
    for name, info in model.model_fields.items():
        value = form.get(name)
        if name != "countries" and isinstance(value, str) and value != "":
            fields[name] = _form_bool(name, value) if _is_bool(info.annotation) else value
    unknown = set(form.keys()) - {"image", *model.model_fields}  # an empty field is not unknown
    if unknown:
        raise invalid(f"unknown form fields: {sorted(unknown)}", field=sorted(unknown)[0])
    return validated(model, fields)


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or bool in get_args(annotation)


def _form_bool(name: str, value: str) -> bool:
    """A form's boolean as its schema says: `true` or `false` (not 0, 1, yes or on, which a
    lax parser would take and a client could mean otherwise)."""
    if value.lower() not in ("true", "false"):
        raise invalid(f"{name} is true or false, not {value!r}", field=name)
    return value.lower() == "true"


@dataclass(frozen=True)
class AcceptedImage:
    """Validated bytes with location data removed, named by their sha256."""

    data: bytes
    sha256: str
    info: ImageInfo


def accept(raw: bytes, limits: ImageLimits) -> AcceptedImage:
    """Validates `raw` and removes its location data (the embedder decodes the image again for
    its model; here only validity matters, so the cheap check suffices)."""
    info = validate_image(raw, limits)
    cleaned = strip_location(raw)
    return AcceptedImage(cleaned, hashlib.sha256(cleaned).hexdigest(), info)


async def accept_image_only(request: Request, limits: ImageLimits) -> AcceptedImage:
    """A form that holds the image and nothing else, accepted."""
    form = await read_form(request)
    try:
        unknown = set(form.keys()) - {"image"}
        if unknown:
            raise invalid(f"unknown form fields: {sorted(unknown)}")
        raw = await read_image_part(form, limits)
    finally:
        await form.close()
    return await asyncio.to_thread(accept, raw, limits)
