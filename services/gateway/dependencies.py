"""What the gateway's routes are given: the settings, the engine, the store, the queue, the
service clients and the caller's key, each a FastAPI dependency read from what the app's
lifespan set up (tests override them the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Query
from sqlalchemy.engine import Engine

from services.common.clients import CaptionerClient, DedupClient, EmbedderClient, FilterClient
from services.common.errors import ErrorResponse, ServiceError
from services.common.http import INT64_MAX
from services.common.service import from_app_state
from services.common.storage import ObjectStore
from services.gateway.auth import Caller, Role, require
from services.gateway.captions import CaptionJobs
from services.gateway.config import GatewaySettings
from services.gateway.points_rules import PointTable
from services.gateway.queue import JobQueue


def documented_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses a router's routes may answer, each with seavl's error body."""
    return {code: {"model": ErrorResponse} for code in codes}


# what the public routes that take uploads and JSON bodies may answer
PUBLIC_ERRORS = documented_errors(400, 401, 403, 404, 409, 413, 415, 422, 503)

SettingsDep = Annotated[GatewaySettings, Depends(from_app_state("settings", GatewaySettings))]
EngineDep = Annotated[Engine, Depends(from_app_state("engine", Engine))]
StoreDep = Annotated[ObjectStore, Depends(from_app_state("store", object))]
QueueDep = Annotated[JobQueue, Depends(from_app_state("queue", object))]
EmbedderDep = Annotated[EmbedderClient, Depends(from_app_state("embedder", EmbedderClient))]
FilterDep = Annotated[FilterClient, Depends(from_app_state("filter", FilterClient))]
DedupDep = Annotated[DedupClient, Depends(from_app_state("dedup", DedupClient))]
CaptionJobsDep = Annotated[CaptionJobs, Depends(from_app_state("captions", CaptionJobs))]
PointTableDep = Annotated[PointTable, Depends(from_app_state("points", PointTable))]
Contributor = Annotated[Caller, Depends(require(Role.CONTRIBUTOR))]
Validator = Annotated[Caller, Depends(require(Role.VALIDATOR))]
Admin = Annotated[Caller, Depends(require(Role.ADMIN))]


# a page of a list: `limit` is checked against the gateway's max_page_size by `page_size`
PageLimit = Annotated[int, Query(ge=1, description="at most the gateway's max_page_size")]
PageOffset = Annotated[int, Query(ge=0, le=INT64_MAX)]


def page_size(settings: GatewaySettings, limit: int) -> int:
    """`limit`, or 422 when it is more than a page may hold (refused, never silently cut)."""
    if limit > settings.max_page_size:
        raise ServiceError(
            422,
            "invalid_request",
            f"limit is at most {settings.max_page_size} (asked {limit}): page with offset",
            field="limit",
        )
    return limit


def within_roots(location: str, settings: GatewaySettings, field: str) -> None:
    """A local folder to read (a crawl) or write (an export) must lie under one of
    `crawl.roots`: a key must not reach the server's other files (S3 locations are bounded by
    the store's own credentials)."""
    if location.startswith("s3://"):
        return
    try:
        path = Path(location).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, an unknown ~user, a loop
        raise ServiceError(
            422, "invalid_request", f"{field} is not a usable path: {exc}", field=field
        ) from exc
    roots = [Path(root).expanduser().resolve() for root in settings.crawl.roots]
    if not any(path == root or root in path.parents for root in roots):
        raise ServiceError(
            422,
            "location_not_allowed",
            f"{location} is outside the folders seavl may read crawls from and write exports "
            f"to (SEAVL_GATEWAY_CRAWL__ROOTS: {', '.join(str(r) for r in roots)})",
            field=field,
        )


def captioner_of(captions: CaptionJobs, hint: str = "") -> CaptionerClient:
    """The captioner client, or 422 `captions_unavailable` when none is configured."""
    if captions.captioner is None:
        message = "this gateway has no captioner configured"
        raise ServiceError(422, "captions_unavailable", f"{message}: {hint}" if hint else message)
    return captions.captioner
