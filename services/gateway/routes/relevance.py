"""Cultural relevance of one image, now (nothing is stored)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.common.http import multipart_body
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    Contributor,
    EmbedderDep,
    FilterDep,
    SettingsDep,
)
from services.gateway.embedding import embed_accepted
from services.gateway.intake import accept_image_only
from services.gateway.schemas import RelevanceOut

router = APIRouter(prefix="/v1", tags=["gateway"], responses=PUBLIC_ERRORS)


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
    image = await accept_image_only(request, settings.images)
    embedded = await embed_accepted(embedder, image)
    scored = await filter_client.score(
        settings.pipeline.reference_set, [embedded.embedding], embedded.model
    )
    result = scored.results[0]
    return RelevanceOut(
        set=scored.set,
        model=scored.model,
        score=result.score,
        tier=result.tier,
        tier_source=result.tier_source,
        tiers_version=result.tiers_version,
        accepted=result.accepted,
        best_country=result.best_country,
        country_scores=result.country_scores,
        phash=embedded.phash,
        sha256=embedded.sha256,
    )
