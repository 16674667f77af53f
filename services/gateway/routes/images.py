"""Images: uploads, their records and content, the list, and captions asked for stored ones."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.engine import Engine

from services.common.captions import CaptionLanguage, caption_language
from services.common.errors import ServiceError
from services.common.http import multipart_body
from services.common.images import MEDIA_TYPES
from services.common.openapi import body_schema
from services.common.privacy import Detectors, Region
from services.common.schemas import Tier
from services.common.states import JobStatus
from services.gateway import records
from services.gateway.auth import Caller, Role
from services.gateway.captions import CaptionJobs
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    CaptionJobsDep,
    Contributor,
    EmbedderDep,
    EngineDep,
    PageLimit,
    PageOffset,
    QueueDep,
    SettingsDep,
    StoreDep,
    Validator,
    captioner_of,
    page_size,
)
from services.gateway.intake import (
    accept,
    form_fields,
    read_form,
    read_image_part,
)
from services.gateway.privacy import screen
from services.gateway.records import ImageRecord
from services.gateway.schemas import (
    CaptionBatchIn,
    CaptionBatchOut,
    CaptionOut,
    Category,
    ImageOut,
    ImagePage,
    PrivacyOut,
    ReviewState,
    UploadMetadata,
)
from services.gateway.tables import ImageRow

router = APIRouter(prefix="/v1", tags=["gateway"], responses=PUBLIC_ERRORS)


def image_out(record: ImageRecord, caller: Caller) -> ImageOut:
    """The record as `caller` may see it: a contributor learns that an image is a duplicate, but
    not of which image unless that one is theirs too."""
    row = record.row
    original = record.original_owner
    shown_original = row.duplicate_of
    if original is not None and not caller.sees_everything:
        shown_original = (
            row.duplicate_of if caller.owns(original.account_id, original.key_id) else None
        )
    return ImageOut.model_validate(
        {
            **row.model_dump(),
            "countries": [c for c in row.countries.split(",") if c],
            "duplicate_of": shown_original,
            "is_duplicate": None if row.status != JobStatus.DONE else row.duplicate_of is not None,
            "captions": [CaptionOut.model_validate(c) for c in record.captions],
            "review": ReviewState(
                count=row.review_count,
                needed=row.reviews_needed,
                quality=row.flag_quality,
                caption_fit=row.flag_caption_fit,
                relevance=row.flag_relevance,
                overall=row.flag_overall,
            ),
            "points": record.points,
            "privacy": _privacy_out(row),
        }
    )


def _privacy_out(row: ImageRow) -> PrivacyOut | None:
    if row.privacy_models is None:
        return None
    return PrivacyOut(
        faces=row.faces or 0,
        plates=row.plates or 0,
        blurred=bool(row.blurred),
        regions=[Region.model_validate(r) for r in json.loads(row.privacy_regions or "[]")],
        unsafe_score=row.unsafe_score,
        held=row.held,
        detectors=Detectors.model_validate_json(row.privacy_models),
    )


def readable_record(engine: Engine, image_id: str, caller: Caller) -> ImageRecord:
    """The record, if `caller` may read it (404 alike for one not there and one not theirs)."""
    record = records.image_record(engine, image_id)
    if record is None or not (
        caller.sees_everything or caller.owns(record.row.account_id, record.row.uploaded_by)
    ):
        raise _unknown_image(image_id)
    return record


def _submission_form(metadata: UploadMetadata) -> None:
    """A person's submission carries the whole SEA-VL form; 422 naming the first field left
    out."""
    missing = [
        name
        for name, given in (
            ("countries", bool(metadata.countries)),
            ("location", bool(metadata.location and metadata.location.strip())),
            ("category", metadata.category is not None),
            ("native_language", metadata.native_language is not None),
            ("caption_native", bool(metadata.caption_native and metadata.caption_native.strip())),
            ("caption_en", bool(metadata.caption_en and metadata.caption_en.strip())),
        )
        if not given
    ]
    if missing:
        raise ServiceError(
            422, "invalid_request", f"the form needs {', '.join(missing)}", field=missing[0]
        )
    if metadata.consent is not True:
        raise ServiceError(
            422,
            "consent_required",
            "agree to release the image under CC-BY-SA 4.0 (you took it and removed personal "
            "information)",
            field="consent",
        )


def _wanted_caption(metadata: UploadMetadata, captions: CaptionJobs) -> CaptionLanguage | None:
    """The caption language an upload asks for; 422 when it cannot be had."""
    if not metadata.caption and metadata.caption_language is None:
        return None
    language = caption_language(metadata.caption_language or CaptionLanguage.ENGLISH.value)
    captioner_of(captions, "upload without 'caption'")
    return language


def _unknown_image(image_id: str) -> ServiceError:
    return ServiceError(404, "unknown_image", f"no image {image_id}")


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
    engine: EngineDep,
    store: StoreDep,
    queue: QueueDep,
    captions: CaptionJobsDep,
    embedder: EmbedderDep,
) -> ImageOut:
    form = await read_form(request)
    try:
        metadata = form_fields(form, UploadMetadata)
        if key.account_id is not None:
            _submission_form(metadata)
        caption = _wanted_caption(metadata, captions)  # refused before the image is read
        raw = await read_image_part(form, settings.images)
    finally:
        await form.close()
    countries = ",".join(c.value for c in metadata.countries)
    accepted = await asyncio.to_thread(accept, raw, settings.images)
    # faces and plates blurred before anything is stored (503 while the embedder is down); the
    # embedding of an image kept as sent comes with the answer, and its job carries it
    (outcome,) = await screen([accepted], embedder, settings.privacy, settings.safety, embed=True)
    if isinstance(outcome, ServiceError):
        raise outcome
    image, screening = outcome

    def keep() -> records.Recorded:
        """Storage and the record in one trip to a thread, in that order (the bytes are stored
        before the record that names them)."""
        store.put(image.sha256, image.data)
        row = ImageRow(
            id=image.sha256,
            format=image.info.format,
            size_bytes=len(image.data),
            width=image.info.width,
            height=image.info.height,
            countries=f",{countries}," if countries else "",
            location=metadata.location,
            native_language=metadata.native_language.value if metadata.native_language else None,
            caption_native=metadata.caption_native,
            caption_en=metadata.caption_en,
            want_caption=caption is not None,
            uploaded_by=key.key_id,
            account_id=key.account_id,
            category=metadata.category.value if metadata.category else None,
        )
        screening.mark(row)
        return records.record_upload(engine, row, caption)

    recorded = await asyncio.to_thread(keep)
    if recorded.created or recorded.row.status == JobStatus.QUEUED:
        await queue.enqueue(image.sha256, screening.embedded)
    for job in recorded.captions_to_start:
        await queue.enqueue_caption(job)
    if not recorded.created:
        response.status_code = status.HTTP_200_OK
    if recorded.created:
        return image_out(ImageRecord(recorded.row, recorded.captions, 0.0, None), key)
    # sent before: shown as a read shows it (the copy's original named only if it is theirs)
    again = await asyncio.to_thread(records.image_record, engine, recorded.row.id)
    return image_out(again or ImageRecord(recorded.row, recorded.captions, 0.0, None), key)


@router.get("/images/{image_id}", response_model=ImageOut, summary="An image's status and results")
def get_image(image_id: str, caller: Contributor, engine: EngineDep) -> ImageOut:
    return image_out(readable_record(engine, image_id, caller), caller)


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
def get_content(image_id: str, caller: Contributor, engine: EngineDep, store: StoreDep) -> Response:
    """403 `held_for_review` for anyone but an admin while the image is held as unsafe: its
    pixels are shown on no page (its record still says it is held)."""
    row = readable_record(engine, image_id, caller).row
    if row.held and caller.role is not Role.ADMIN:
        raise ServiceError(
            403,
            "held_for_review",
            f"image {image_id} is held for an admin's review: its unsafe score "
            f"{row.unsafe_score} reached the safety threshold",
        )
    return Response(
        store.get(row.id),
        media_type=MEDIA_TYPES.get(row.format, "application/octet-stream"),
        headers={"X-Content-Type-Options": "nosniff"},  # served as the image it is, never HTML
    )


FlagQuery = Annotated[
    records.FlagValue | None, Query(description="a review flag: true, false or none (undecided)")
]


@router.get(
    "/images",
    response_model=ImagePage,
    summary="Images, filtered and paginated (a contributor's own only)",
)
def list_images(
    caller: Contributor,
    settings: SettingsDep,
    engine: EngineDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    tier: Tier | None = None,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    duplicate: bool | None = None,
    mine: Annotated[
        bool, Query(description="only the caller's own (always, for contributors)")
    ] = False,
    category: Category | None = None,
    quality: FlagQuery = None,
    caption_fit: FlagQuery = None,
    relevance: FlagQuery = None,
    overall: FlagQuery = None,
    min_reviews: Annotated[int | None, Query(ge=0, le=100)] = None,
    held: Annotated[
        bool | None, Query(description="held for review as unsafe (admins see them only)")
    ] = None,
    faces: Annotated[bool | None, Query(description="with faces found, or without")] = None,
    blurred: Annotated[bool | None, Query(description="blurred before storing, or not")] = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> ImagePage:
    page_size(settings, limit)
    flags = {
        f"flag_{name}": value
        for name, value in (
            ("quality", quality),
            ("caption_fit", caption_fit),
            ("relevance", relevance),
            ("overall", overall),
        )
        if value is not None
    }
    own = mine or not caller.sees_everything
    where = records.ImageFilter(
        status_filter,
        tier,
        country,
        duplicate,
        owner=records.Owner(caller.account_id, caller.key_id) if own else None,
        category=category.value if category else None,
        flags=flags,
        min_reviews=min_reviews,
        held=held,
        faces=faces,
        blurred=blurred,
    )
    page = records.image_page(engine, where, limit, offset)
    return ImagePage(
        items=[image_out(r, caller) for r in page.records],
        total=page.total,
        limit=limit,
        offset=offset,
    )


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
    _: Validator,
    engine: EngineDep,
    queue: QueueDep,
    captions: CaptionJobsDep,
) -> CaptionBatchOut:
    language = caption_language(body.language)
    captioner_of(captions)
    asked = await asyncio.to_thread(
        records.ask_captions, engine, body.image_ids, language, body.location_aware, body.redo
    )
    for job in asked.start:
        await queue.enqueue_caption(job)
    return CaptionBatchOut(
        language=language.value,
        queued=asked.queued,
        already_done=asked.already_done,
        unknown=asked.unknown,
    )
