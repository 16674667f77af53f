"""A caption of one image, now, in a language, aware of its place (nothing is stored)."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Request

from services.common.captions import (
    CaptionOptions,
    CaptionRequest,
    CaptionResponse,
    caption_language,
)
from services.common.http import multipart_body
from services.common.openapi import body_schema
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    CaptionJobsDep,
    Contributor,
    SettingsDep,
    captioner_of,
)
from services.gateway.intake import accept, form_fields, read_form, read_image_part

router = APIRouter(prefix="/v1", tags=["gateway"], responses=PUBLIC_ERRORS)


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
    captioner = captioner_of(captions)
    form = await read_form(request)
    try:
        options = form_fields(form, CaptionOptions)
        caption_language(options.language)  # refused before the image is read
        raw = await read_image_part(form, settings.images)
    finally:
        await form.close()
    image = await asyncio.to_thread(accept, raw, settings.images)
    body = CaptionRequest(data=base64.b64encode(image.data).decode("ascii"), **options.model_dump())
    return await captioner.caption(body)
