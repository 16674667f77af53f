"""Reference sets and calibrations, managed by admins through the gateway.

The filter keeps them and answers only calls with the service token, so this is the way in for
people: each route checks the admin role and passes the call on; the filter's own answers,
errors included (404 `not_found`, 409, 422 with their codes), come back as they are.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from services.common.http import RowId
from services.common.reference_sets import (
    AddReferencesRequest,
    AddReferencesResponse,
    CalibrationList,
    CalibrationOut,
    CalibrationRequest,
    CreateSetRequest,
    FitTiersRequest,
    ReferenceSetInfo,
    ReferenceSetList,
    TierBoundariesOut,
    TierHistory,
)
from services.gateway.dependencies import Admin, FilterDep, documented_errors

router = APIRouter(
    prefix="/v1/reference-sets",
    tags=["reference sets"],
    responses=documented_errors(401, 403, 404, 409, 413, 422, 503),
)


@router.get("", response_model=ReferenceSetList, summary="Every reference set")
async def list_sets(_: Admin, filter_service: FilterDep) -> ReferenceSetList:
    return await filter_service.list_sets()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ReferenceSetInfo,
    summary="A new, empty reference set for one embedder model",
)
async def create_set(
    body: CreateSetRequest, _: Admin, filter_service: FilterDep
) -> ReferenceSetInfo:
    return await filter_service.create_set(body)


@router.get("/{name}", response_model=ReferenceSetInfo, summary="A set: its ρ and references")
async def get_set(name: str, _: Admin, filter_service: FilterDep) -> ReferenceSetInfo:
    return await filter_service.get_set(name)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a set, its references and calibrations",
)
async def delete_set(name: str, _: Admin, filter_service: FilterDep) -> Response:
    await filter_service.delete_set(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/references",
    status_code=status.HTTP_201_CREATED,
    response_model=AddReferencesResponse,
    summary="Add reference vectors or images (embedded with the set's model); all or none",
)
async def add_references(
    name: str, body: AddReferencesRequest, _: Admin, filter_service: FilterDep
) -> AddReferencesResponse:
    return await filter_service.add_references(name, body)


@router.delete(
    "/{name}/references/{reference_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove one reference",
)
async def delete_reference(
    name: str, reference_id: RowId, _: Admin, filter_service: FilterDep
) -> Response:
    await filter_service.delete_reference(name, reference_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/calibrations",
    status_code=status.HTTP_201_CREATED,
    response_model=CalibrationOut,
    summary="Relevance per tier from labelled samples, and the lowest ρ reaching a precision",
)
async def calibrate(
    name: str, body: CalibrationRequest, _: Admin, filter_service: FilterDep
) -> CalibrationOut:
    return await filter_service.calibrate(name, body)


@router.get("/{name}/calibrations", response_model=CalibrationList, summary="A set's calibrations")
async def list_calibrations(name: str, _: Admin, filter_service: FilterDep) -> CalibrationList:
    return await filter_service.list_calibrations(name)


@router.post(
    "/{name}/calibrations/{calibration_id}/apply",
    response_model=ReferenceSetInfo,
    summary="Make a calibration's recommended ρ the set's",
)
async def apply_calibration(
    name: str, calibration_id: RowId, _: Admin, filter_service: FilterDep
) -> ReferenceSetInfo:
    return await filter_service.apply_calibration(name, calibration_id)


@router.get(
    "/{name}/tiers",
    response_model=TierHistory,
    summary="Every version of a set's tier boundaries, with its source (the last is in force)",
)
async def tier_history(name: str, _: Admin, filter_service: FilterDep) -> TierHistory:
    return await filter_service.tier_history(name)


@router.post(
    "/{name}/tiers",
    status_code=status.HTTP_201_CREATED,
    response_model=TierBoundariesOut,
    summary="New tier boundaries: the paper's numbers, shares of background scores, or labels",
)
async def fit_tiers(
    name: str, body: FitTiersRequest, _: Admin, filter_service: FilterDep
) -> TierBoundariesOut:
    return await filter_service.fit_tiers(name, body)
