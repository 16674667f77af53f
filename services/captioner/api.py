"""The captioner's HTTP layer: captions of one image, and the prompts it uses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.captioner.captioning import Captioner
from services.captioner.prompts import PromptBook
from services.common.captions import (
    CaptionLanguage,
    CaptionRequest,
    CaptionResponse,
    PromptsResponse,
)
from services.common.errors import ErrorResponse
from services.common.service import from_app_state

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 502, 503)
}
router = APIRouter(prefix="/v1", tags=["captioner"], responses=ERRORS)

CaptionerDep = Annotated[Captioner, Depends(from_app_state("captioner", Captioner))]
PromptsDep = Annotated[PromptBook, Depends(from_app_state("prompts", PromptBook))]


@router.post(
    "/captions",
    response_model=CaptionResponse,
    summary="Caption one image now (bytes or a stored key), in a language, aware of its place",
    description="422 `unsupported_language` lists the supported languages; 503 when the VLM "
    "is unreachable or too slow (retry after `Retry-After`); 502 `bad_vlm_answer` when it "
    "answers without a caption.",
)
async def caption(body: CaptionRequest, captioner: CaptionerDep) -> CaptionResponse:
    return await captioner.caption(body)


@router.get("/prompts", response_model=PromptsResponse, summary="The prompts, by language")
def prompts(book: PromptsDep) -> PromptsResponse:
    return PromptsResponse(languages=list(CaptionLanguage), prompts=book.texts())
