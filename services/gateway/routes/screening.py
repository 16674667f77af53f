"""The validator screening: the admins' set of images with answers, and taking it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from services.common.errors import ServiceError
from services.common.http import RowId, multipart_body
from services.common.images import MEDIA_TYPES, sniff_format
from services.common.openapi import body_schema
from services.gateway import screening
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    Admin,
    Contributor,
    EngineDep,
    SettingsDep,
    StoreDep,
)
from services.gateway.intake import accept, form_fields, read_form, read_image_part
from services.gateway.people_schemas import (
    ScreeningAnswers,
    ScreeningItemAdmin,
    ScreeningItemList,
    ScreeningItemOut,
    ScreeningResult,
    ScreeningSet,
)
from services.gateway.review_rules import CaptionFit
from services.gateway.tables import ScreeningItemRow

router = APIRouter(prefix="/v1/screening", tags=["people"], responses=PUBLIC_ERRORS)


class ScreeningItemForm(BaseModel):
    """The fields beside the image: its caption and the answers a validator should give."""

    caption_en: str = Field(min_length=1, max_length=5000)
    quality: int = Field(ge=0, le=1)
    relevance: int = Field(ge=1, le=5)
    caption_fit: CaptionFit


def _image_url(row: ScreeningItemRow) -> str:
    return f"/v1/screening/items/{row.id}/image"


def _admin_view(row: ScreeningItemRow) -> ScreeningItemAdmin:
    return ScreeningItemAdmin(
        id=row.id or 0,
        caption_en=row.caption_en,
        image_url=_image_url(row),
        quality=row.quality,
        relevance=row.relevance,
        caption_fit=CaptionFit(row.caption_fit),
    )


@router.post(
    "/items",
    status_code=status.HTTP_201_CREATED,
    response_model=ScreeningItemAdmin,
    summary="Add an image with its expected answers to the screening (admins)",
    openapi_extra=multipart_body("image", body_schema(ScreeningItemForm)["properties"]),
)
async def add_item(
    request: Request, _: Admin, settings: SettingsDep, engine: EngineDep, store: StoreDep
) -> ScreeningItemAdmin:
    form = await read_form(request)
    try:
        fields = form_fields(form, ScreeningItemForm)
        raw = await read_image_part(form, settings.images)
    finally:
        await form.close()
    image = await asyncio.to_thread(accept, raw, settings.images)
    await asyncio.to_thread(store.put, image.sha256, image.data)
    row = ScreeningItemRow(
        image_id=image.sha256,
        caption_en=fields.caption_en,
        quality=fields.quality,
        relevance=fields.relevance,
        caption_fit=fields.caption_fit.value,
    )
    return _admin_view(await asyncio.to_thread(screening.add_item, engine, row))


@router.get("/items", response_model=ScreeningItemList, summary="The set, answers included")
def list_items(_: Admin, engine: EngineDep) -> ScreeningItemList:
    return ScreeningItemList(items=[_admin_view(r) for r in screening.items(engine)])


@router.delete("/items/{item_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an item")
def remove_item(item_id: RowId, _: Admin, engine: EngineDep) -> Response:
    screening.remove_item(engine, item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/items/{item_id}/image",
    response_class=Response,
    summary="A screening image",
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}},
)
def item_image(item_id: RowId, _: Contributor, engine: EngineDep, store: StoreDep) -> Response:
    data = store.get(screening.item(engine, item_id).image_id)
    return Response(
        data,
        media_type=MEDIA_TYPES.get(sniff_format(data) or "", "application/octet-stream"),
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.get("", response_model=ScreeningSet, summary="The screening to take (no answers)")
def screening_set(_: Contributor, settings: SettingsDep, engine: EngineDep) -> ScreeningSet:
    return ScreeningSet(
        items=[
            ScreeningItemOut(id=r.id or 0, caption_en=r.caption_en, image_url=_image_url(r))
            for r in screening.items(engine)
        ],
        pass_score=settings.people.screening_pass_score,
    )


@router.post(
    "/answers",
    response_model=ScreeningResult,
    summary="Take the screening; passing makes a contributor a validator",
)
def take_screening(
    body: ScreeningAnswers, caller: Contributor, settings: SettingsDep, engine: EngineDep
) -> ScreeningResult:
    if caller.account_id is None:
        raise ServiceError(403, "no_account", "the screening is taken by people: sign in")
    answers = {
        a.item_id: screening.ScreeningAnswer(a.quality, a.relevance, a.caption_fit)
        for a in body.answers
    }
    people = settings.people
    attempt = screening.take(
        engine, caller.account_id, answers, people.screening_pass_score, people.screening_attempts
    )
    return ScreeningResult(score=attempt.score, passed=attempt.passed, role=attempt.role)
