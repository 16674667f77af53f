"""The public API: uploads, their status and results, and synchronous relevance and dedup."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import col, select
from starlette.datastructures import FormData, UploadFile

from services.common.captions import (
    CaptionLanguage,
    CaptionOptions,
    CaptionRequest,
    CaptionResponse,
    caption_language,
)
from services.common.clients import (
    CaptionerClient,
    DedupClient,
    EmbedderClient,
    FilterClient,
    ImageReference,
)
from services.common.database import session_scope
from services.common.errors import ErrorResponse, ServiceError, validated
from services.common.http import INT64_MAX, multipart_body, read_json
from services.common.images import MEDIA_TYPES, ImageInfo, ImageLimits, validate_image
from services.common.location import strip_location
from services.common.openapi import body_schema
from services.common.schemas import DedupCheckRequest, EmbeddedImage, ImageFailure
from services.common.service import from_app_state
from services.common.storage import ObjectStore
from services.gateway.auth import Role, require
from services.gateway.captions import CaptionJobs, ask_caption, captions_of, job_of
from services.gateway.config import GatewaySettings
from services.gateway.jobs import FINISHED, CaptionJob
from services.gateway.queue import JobQueue
from services.gateway.schemas import (
    CaptionBatchIn,
    CaptionBatchOut,
    CaptionOut,
    DedupQuery,
    DuplicatesOut,
    ImageOut,
    ImagePage,
    RelevanceOut,
    UploadMetadata,
)
from services.gateway.tables import ApiKeyRow, CaptionRow, ImageRow

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}
router = APIRouter(prefix="/v1", tags=["gateway"], responses=ERRORS)

SettingsDep = Annotated[GatewaySettings, Depends(from_app_state("settings", GatewaySettings))]
StoreDep = Annotated[ObjectStore, Depends(from_app_state("store", object))]
QueueDep = Annotated[JobQueue, Depends(from_app_state("queue", object))]
EmbedderDep = Annotated[EmbedderClient, Depends(from_app_state("embedder", EmbedderClient))]
FilterDep = Annotated[FilterClient, Depends(from_app_state("filter", FilterClient))]
DedupDep = Annotated[DedupClient, Depends(from_app_state("dedup", DedupClient))]
CaptionJobsDep = Annotated[CaptionJobs, Depends(from_app_state("captions", CaptionJobs))]
Contributor = Annotated[ApiKeyRow, Depends(require(Role.CONTRIBUTOR))]
Validator = Annotated[ApiKeyRow, Depends(require(Role.VALIDATOR))]


def _invalid(message: str, field: str | None = None) -> ServiceError:
    return ServiceError(422, "invalid_request", message, field=field)


async def _read_image_part(form: FormData, limits: ImageLimits) -> bytes:
    part = form.get("image")
    if not isinstance(part, UploadFile):
        raise _invalid("send the image file in the multipart field 'image'", field="image")
    return await asyncio.to_thread(part.file.read, limits.max_bytes + 1)


async def _multipart(request: Request, settings: GatewaySettings) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ServiceError(415, "unsupported_media_type", "send multipart/form-data")
    return await request.form(max_files=1, max_fields=32, max_part_size=64 * 1024)


def _accept(raw: bytes, limits: ImageLimits) -> tuple[bytes, str, ImageInfo]:
    """Validated bytes with location data removed, their sha256, and what validation found.

    The embedder decodes the image again for its model; here only validity matters, so the
    cheap check suffices (the pHash comes with the embedding)."""
    info = validate_image(raw, limits)
    cleaned = strip_location(raw)
    return cleaned, hashlib.sha256(cleaned).hexdigest(), info


FormModel = TypeVar("FormModel", bound=BaseModel)


def _form_fields(form: FormData, model: type[FormModel]) -> FormModel:
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
    for name in model.model_fields:
        value = form.get(name)
        if name != "countries" and isinstance(value, str) and value != "":
            fields[name] = value
    unknown = set(form.keys()) - {"image", "countries", *fields}
    if unknown:
        raise _invalid(f"unknown form fields: {sorted(unknown)}", field=sorted(unknown)[0])
    return validated(model, fields)


def _captioner(captions: CaptionJobs, hint: str = "") -> CaptionerClient:
    """The captioner client, or 422 `captions_unavailable` when none is configured."""
    if captions.captioner is None:
        message = "this gateway has no captioner configured"
        raise ServiceError(422, "captions_unavailable", f"{message}: {hint}" if hint else message)
    return captions.captioner


def _wanted_caption(metadata: UploadMetadata, captions: CaptionJobs) -> CaptionLanguage | None:
    """The caption language an upload asks for; 422 when it cannot be had."""
    if not metadata.caption and metadata.caption_language is None:
        return None
    language = caption_language(metadata.caption_language or CaptionLanguage.ENGLISH.value)
    _captioner(captions, "upload without 'caption'")
    return language


def image_out(row: ImageRow, captions: Sequence[CaptionRow] = ()) -> ImageOut:
    return ImageOut.model_validate(
        {
            **row.model_dump(),
            "countries": [c for c in row.countries.split(",") if c],
            "is_duplicate": None if row.status != "done" else row.duplicate_of is not None,
            "captions": [CaptionOut.model_validate(c) for c in captions],
        }
    )


@dataclass
class Recorded:
    row: ImageRow
    created: bool
    captions: list[CaptionRow]
    captions_to_start: list[CaptionJob]  # asked now for an image already processed


def _record(request: Request, row: ImageRow, caption: CaptionLanguage | None) -> Recorded:
    """Inserts the record unless the same bytes were uploaded before, with the caption asked
    for, in one transaction."""
    with session_scope(request.app.state.engine) as session:
        existing = session.get(ImageRow, row.id)
        if existing is not None:
            row = existing
        else:
            session.add(row)
        asked = None  # a caption this image already has, in any state, is left as it is
        if caption is not None and session.get(CaptionRow, (row.id, caption.value)) is None:
            asked = CaptionRow(image_id=row.id, language=caption.value)
            session.add(asked)
        if existing is None:  # a new image has no captions but the one just asked for
            captions = [asked] if asked is not None else []
        else:
            session.flush()
            captions = captions_of(session, [row.id]).get(row.id, [])
        start = [job_of(asked)] if asked is not None and row.status in FINISHED else []
    return Recorded(row, existing is None, captions, start)


@router.post(
    "/images",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ImageOut,
    responses={200: {"model": ImageOut, "description": "The same bytes were stored before"}},
    summary="Upload an image with its metadata; it is processed in the background",
    openapi_extra=multipart_body("image", body_schema(UploadMetadata)["properties"]),
)
async def upload_image(
    request: Request,
    response: Response,
    key: Contributor,
    settings: SettingsDep,
    store: StoreDep,
    queue: QueueDep,
    captions: CaptionJobsDep,
) -> ImageOut:
    form = await _multipart(request, settings)
    try:
        metadata = _form_fields(form, UploadMetadata)
        caption = _wanted_caption(metadata, captions)  # refused before the image is read
        raw = await _read_image_part(form, settings.images)
    finally:
        await form.close()
    cleaned, sha256, decoded = await asyncio.to_thread(_accept, raw, settings.images)
    await asyncio.to_thread(store.put, sha256, cleaned)  # the bytes exist before the record
    recorded = await asyncio.to_thread(
        _record,
        request,
        ImageRow(
            id=sha256,
            format=decoded.format,
            size_bytes=len(cleaned),
            width=decoded.width,
            height=decoded.height,
            countries="," + ",".join(c.value for c in metadata.countries) + ","
            if metadata.countries
            else "",
            location=metadata.location,
            native_language=metadata.native_language.value if metadata.native_language else None,
            caption_native=metadata.caption_native,
            caption_en=metadata.caption_en,
            want_caption=caption is not None,
            uploaded_by=key.id,
        ),
        caption,
    )
    if recorded.created or recorded.row.status == "queued":
        await queue.enqueue(sha256)
    for job in recorded.captions_to_start:
        await queue.enqueue_caption(job)
    if not recorded.created:
        response.status_code = status.HTTP_200_OK
    return image_out(recorded.row, recorded.captions)


def _get_row(request: Request, image_id: str) -> ImageRow:
    with session_scope(request.app.state.engine) as session:
        row = session.get(ImageRow, image_id)
    if row is None:
        raise ServiceError(404, "unknown_image", f"no image {image_id}")
    return row


@router.get("/images/{image_id}", response_model=ImageOut, summary="An image's status and results")
def get_image(image_id: str, request: Request, _: Contributor) -> ImageOut:
    with session_scope(request.app.state.engine) as session:
        row = session.get(ImageRow, image_id)
        if row is None:
            raise ServiceError(404, "unknown_image", f"no image {image_id}")
        captions = captions_of(session, [image_id]).get(image_id, [])
    return image_out(row, captions)


@router.get(
    "/images/{image_id}/content",
    summary="The stored image (location data removed)",
    response_class=Response,
    responses={
        200: {
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in MEDIA_TYPES.values()
            }
        }
    },
)
def get_content(image_id: str, request: Request, _: Validator, store: StoreDep) -> Response:
    row = _get_row(request, image_id)
    return Response(
        store.get(row.id),
        media_type=MEDIA_TYPES.get(row.format, "application/octet-stream"),
        headers={"X-Content-Type-Options": "nosniff"},  # served as the image it is, never HTML
    )


@router.get("/images", response_model=ImagePage, summary="Images, filtered and paginated")
def list_images(
    request: Request,
    _: Validator,
    settings: SettingsDep,
    status_filter: Annotated[
        str | None, Query(alias="status", pattern="^(queued|processing|done|failed)$")
    ] = None,
    tier: Annotated[
        str | None, Query(pattern="^(Rejected|Bronze|Silver|Gold|Platinum|Diamond)$")
    ] = None,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    duplicate: bool | None = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> ImagePage:
    limit = min(limit, settings.max_page_size)
    query = select(ImageRow)
    if status_filter is not None:
        query = query.where(ImageRow.status == status_filter)
    if tier is not None:
        query = query.where(ImageRow.tier == tier)
    if country is not None:
        query = query.where(col(ImageRow.countries).contains(f",{country},"))
    if duplicate is not None:
        query = query.where(ImageRow.status == "done").where(
            col(ImageRow.duplicate_of).is_not(None)
            if duplicate
            else col(ImageRow.duplicate_of).is_(None)
        )
    with session_scope(request.app.state.engine) as session:
        total = session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = session.exec(
            query.order_by(col(ImageRow.created_at), col(ImageRow.id)).offset(offset).limit(limit)
        ).all()
        captions = captions_of(session, [r.id for r in rows])
    return ImagePage(
        items=[image_out(r, captions.get(r.id, [])) for r in rows],
        total=int(total),
        limit=limit,
        offset=offset,
    )


async def _embed_upload(
    request: Request, settings: GatewaySettings, embedder: EmbedderClient
) -> EmbeddedImage:
    form = await _multipart(request, settings)
    try:
        unknown = set(form.keys()) - {"image"}
        if unknown:
            raise _invalid(f"unknown form fields: {sorted(unknown)}")
        raw = await _read_image_part(form, settings.images)
    finally:
        await form.close()
    cleaned, _, _ = await asyncio.to_thread(_accept, raw, settings.images)
    result = (await asyncio.to_thread(embedder.embed, [ImageReference(data=cleaned)]))[0]
    if isinstance(result, ImageFailure):
        raise ServiceError(422, result.error.code, result.error.message, field="image")
    return result


@router.post(
    "/relevance",
    response_model=RelevanceOut,
    summary="Cultural relevance of one image (nothing is stored)",
    openapi_extra=multipart_body("image"),
)
async def relevance(
    request: Request,
    _: Contributor,
    settings: SettingsDep,
    embedder: EmbedderDep,
    filter_client: FilterDep,
) -> RelevanceOut:
    embedded = await _embed_upload(request, settings, embedder)
    reference_set = settings.pipeline.reference_set
    scored = await asyncio.to_thread(
        filter_client.score, reference_set, [embedded.embedding], embedded.model
    )
    result = scored.results[0]
    return RelevanceOut(
        set=scored.set,
        model=scored.model,
        score=result.score,
        tier=result.tier,
        accepted=result.accepted,
        best_country=result.best_country,
        country_scores=result.country_scores,
        phash=embedded.phash,
        sha256=embedded.sha256,
    )


@router.post(
    "/dedup",
    response_model=DuplicatesOut,
    summary="Duplicates already stored of an image, a pHash or an embedding (nothing is stored)",
    openapi_extra=multipart_body(
        "image", other_content={"application/json": {"schema": body_schema(DedupQuery)}}
    ),
)
async def find_duplicates(
    request: Request, _: Contributor, settings: SettingsDep, embedder: EmbedderDep, dedup: DedupDep
) -> DuplicatesOut:
    namespace = settings.pipeline.dedup_namespace
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        query = validated(DedupQuery, read_json(await request.body()))
        check = DedupCheckRequest(
            namespace=namespace,
            model=query.model,
            vectors=[query.embedding] if query.embedding is not None else [],
            phashes=[query.phash] if query.phash else [],
        )
    else:
        embedded = await _embed_upload(request, settings, embedder)
        check = DedupCheckRequest(
            namespace=namespace,
            model=embedded.model,
            vectors=[embedded.embedding],
            phashes=[embedded.phash],
        )
    found = await asyncio.to_thread(dedup.check, check)
    by_embedding = found.vectors[0].neighbours if found.vectors else []
    by_phash = found.phashes[0].matches if found.phashes else []
    # The embedding decides when there is one (pHash alone is a weak signal: 2 % precision in
    # the paper's top pairs); the uploader, which has no model, decides by pHash.
    is_duplicate = bool(by_embedding) if check.vectors else bool(by_phash)
    return DuplicatesOut(by_embedding=by_embedding, by_phash=by_phash, is_duplicate=is_duplicate)


def _ask_captions(
    request: Request, body: CaptionBatchIn, language: CaptionLanguage
) -> tuple[CaptionBatchOut, list[CaptionJob]]:
    ids = list(dict.fromkeys(body.image_ids))
    outcome = CaptionBatchOut(language=language.value, queued=[], already_done=[], unknown=[])
    start: list[CaptionJob] = []
    with session_scope(request.app.state.engine) as session:
        images = {
            row.id: row
            for row in session.exec(select(ImageRow).where(col(ImageRow.id).in_(ids))).all()
        }
        for image_id in ids:
            image = images.get(image_id)
            if image is None:
                outcome.unknown.append(image_id)
                continue
            row = ask_caption(session, image_id, language, body.location_aware, body.redo)
            if row is None:
                outcome.already_done.append(image_id)
                continue
            outcome.queued.append(image_id)
            if image.status in FINISHED:  # else the image's own job queues it when it ends
                start.append(job_of(row))
    return outcome, start


@router.post(
    "/images/captions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CaptionBatchOut,
    summary="Queue captions of stored images in one language",
    description="Each caption is a queued job; read it on `GET /v1/images/{id}` (`captions`). "
    "A caption already done is kept unless `redo`; a failed one is asked again.",
)
async def queue_captions(
    body: CaptionBatchIn,
    request: Request,
    _: Validator,
    queue: QueueDep,
    captions: CaptionJobsDep,
) -> CaptionBatchOut:
    language = caption_language(body.language)
    _captioner(captions)
    outcome, start = await asyncio.to_thread(_ask_captions, request, body, language)
    for job in start:
        await queue.enqueue_caption(job)
    return outcome


@router.post(
    "/captions",
    response_model=CaptionResponse,
    summary="Caption one image now, in a language, aware of its place (nothing is stored)",
    description="Waits for the captioner (a VLM takes seconds): 503 with `Retry-After` when it "
    "is unavailable or too slow, 502 `bad_vlm_answer` when the VLM answers no caption.",
    openapi_extra=multipart_body("image", body_schema(CaptionOptions)["properties"]),
)
async def caption_now(
    request: Request, _: Contributor, settings: SettingsDep, captions: CaptionJobsDep
) -> CaptionResponse:
    captioner = _captioner(captions)
    form = await _multipart(request, settings)
    try:
        options = _form_fields(form, CaptionOptions)
        caption_language(options.language)  # refused before the image is read
        raw = await _read_image_part(form, settings.images)
    finally:
        await form.close()
    cleaned = (await asyncio.to_thread(_accept, raw, settings.images))[0]
    body = CaptionRequest(data=base64.b64encode(cleaned).decode("ascii"), **options.model_dump())
    return await asyncio.to_thread(captioner.caption, body)
