"""Reviews: the next image for a validator, and the validation form sent for an image."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from services.common.errors import ServiceError
from services.gateway import reviews
from services.gateway.auth import Caller
from services.gateway.dependencies import (
    PUBLIC_ERRORS,
    EngineDep,
    PointTableDep,
    SettingsDep,
    Validator,
)
from services.gateway.people_schemas import Assignment, ReviewIn, ReviewOut, ReviewResult
from services.gateway.routes.images import image_out, readable_record
from services.gateway.tables import ReviewRow

router = APIRouter(prefix="/v1", tags=["people"], responses=PUBLIC_ERRORS)


def _reviewer(caller: Caller) -> int:
    if caller.account_id is None:
        raise ServiceError(403, "no_account", "reviews are given by people: sign in")
    return caller.account_id


@router.get(
    "/reviews/next",
    response_model=Assignment,
    responses={204: {"description": "Nothing to review now"}},
    summary="The image to review next (leased to you for a while)",
)
async def next_review(
    caller: Validator, settings: SettingsDep, engine: EngineDep
) -> Assignment | Response:
    reviewer = _reviewer(caller)
    assignment = await asyncio.to_thread(
        reviews.next_for, engine, reviewer, settings.people.review_lease_minutes
    )
    if assignment is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    record = await asyncio.to_thread(readable_record, engine, assignment.image_id, caller)
    return Assignment(image=image_out(record, caller), lease_expires_at=assignment.lease_expires_at)


@router.post(
    "/images/{image_id}/reviews",
    status_code=status.HTTP_201_CREATED,
    response_model=ReviewResult,
    summary="Review an image (the SEA-VL validation form)",
)
async def review_image(
    image_id: str, body: ReviewIn, caller: Validator, table: PointTableDep, engine: EngineDep
) -> ReviewResult:
    reviewer = _reviewer(caller)
    row = ReviewRow(
        image_id=image_id,
        reviewer_id=reviewer,
        quality=body.quality,
        relevance=body.relevance,
        caption_fit=body.caption_fit.value,
        pii=body.pii,
        unsafe=body.unsafe,
        comment=body.comment,
    )
    done = await asyncio.to_thread(reviews.submit, engine, image_id, reviewer, row, table)
    record = await asyncio.to_thread(readable_record, engine, done.image.id, caller)
    return ReviewResult(
        review=ReviewOut.model_validate(done.review), image=image_out(record, caller)
    )
