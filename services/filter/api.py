"""The filter's HTTP layer: reference sets, scoring, calibration."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Response, status

from services.common.clients import EmbedderClient
from services.common.errors import ErrorResponse, ServiceError, ensure_at_most
from services.common.http import RowId
from services.common.reference_sets import (
    AddReferencesRequest,
    AddReferencesResponse,
    CalibrationList,
    CalibrationOut,
    CalibrationRequest,
    CreateSetRequest,
    FitTiersRequest,
    ImageOrVector,
    ReferenceSetInfo,
    ReferenceSetList,
    TierBoundariesOut,
    TierHistory,
    TierRowOut,
)
from services.common.schemas import (
    ImageFailure,
    ImageInput,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
)
from services.common.service import from_app_state
from services.common.storage import validate_key
from services.common.tiers import TierSource
from services.common.vectors import parse_vectors
from services.filter import tiering
from services.filter.config import FilterSettings
from services.filter.relevance import calibrate, relevance_scores
from services.filter.store import (
    Centroids,
    ReferenceStore,
    SetView,
    boundaries_of,
    calibration_table,
    model_mismatch,
)
from services.filter.tables import CalibrationRow, ReferenceSetRow, TierBoundariesRow

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (404, 409, 422, 503)
}
router = APIRouter(prefix="/v1", tags=["relevance"], responses=ERRORS)


SettingsDep = Annotated[FilterSettings, Depends(from_app_state("settings", FilterSettings))]
StoreDep = Annotated[ReferenceStore, Depends(from_app_state("store", ReferenceStore))]
EmbedderDep = Annotated[EmbedderClient, Depends(from_app_state("embedder", EmbedderClient))]


def _set_info(view: SetView, settings: FilterSettings) -> ReferenceSetInfo:
    row, tiers = view.row, view.tiers
    rho, rho_source = tiering.rho_in_force(row, tiers, settings)
    return ReferenceSetInfo(
        name=row.name,
        model=row.model,
        dim=row.dim,
        description=row.description,
        rho=rho,
        rho_source=rho_source,
        references=view.counts.get("", 0),
        references_version=row.references_version,
        tiers=tiering.tiers_out(tiers, row.references_version) if tiers is not None else None,
        observed_scores=view.observed_scores,
        countries={k: v for k, v in sorted(view.counts.items()) if k},
        created_at=row.created_at,
    )


async def resolve_vectors(
    items: list[ImageOrVector], row: ReferenceSetRow, embedder: EmbedderClient, field: str
) -> npt.NDArray[np.float32]:
    """Unit vectors for every item, in order; images are embedded with the set's model.

    One bad item fails the request and nothing is stored.
    """
    images = [
        (index, ImageInput(data=_checked_base64(item.data, f"{field}[{index}].image")))
        if item.data is not None
        else (index, ImageInput(key=validate_key(item.key or "")))
        for index, item in enumerate(items)
        if item.vector is None
    ]
    embedded: dict[int, list[float] | str] = {}
    if images:
        try:
            results = await embedder.embed([reference for _, reference in images], model=row.model)
        except ServiceError as exc:
            if exc.code != "unknown_model":
                raise
            raise ServiceError(
                409,
                "model_not_served",
                f"set {row.name!r} holds {row.model} vectors, a model the embedder does not "
                "serve: send vectors instead of images",
                field=field,
            ) from exc
        for (index, _), result in zip(images, results, strict=True):
            if isinstance(result, ImageFailure):
                raise result.as_error(field=f"{field}[{index}]", prefix=f"{field}[{index}]: ")
            embedded[index] = result.embedding
    wire = [item.vector if item.vector is not None else embedded[i] for i, item in enumerate(items)]
    return parse_vectors(wire, field=field, dim=row.dim)


def _scoring_target(
    store: ReferenceStore, name: str, model: str | None
) -> tuple[Centroids, npt.NDArray[np.float64], TierBoundariesRow]:
    """The set's centroids and boundaries, refusing vectors of another model and sets with no
    references."""
    centroids = store.centroids(name)
    row = centroids.reference_set
    if model is not None and model != row.model:
        raise model_mismatch(row, model)
    if centroids.whole is None:
        raise ServiceError(409, "empty_set", f"set {name!r} has no references yet", field="set")
    if centroids.tiers is None:  # references added before tiers had versions
        store.ensure_tiers(name)
        return _scoring_target(store, name, model)
    return centroids, centroids.whole, centroids.tiers


def _checked_base64(data: str, field: str) -> str:
    """`data` when it is base64 of some bytes (the embedder reads it), else the embedder's
    error for it, naming the field."""
    if not data:
        raise ServiceError(400, "empty_image", f"{field} is empty (0 bytes)", field=field)
    try:
        base64.b64decode(data, validate=True)
        return data
    except ValueError as exc:
        raise ServiceError(
            422, "invalid_base64", f"{field} is not valid base64", field=field
        ) from exc


@router.post(
    "/reference-sets", status_code=status.HTTP_201_CREATED, response_model=ReferenceSetInfo
)
def create_set(body: CreateSetRequest, store: StoreDep, settings: SettingsDep) -> ReferenceSetInfo:
    row = store.create_set(body.name, body.model, body.description, body.dim)
    return _set_info(SetView(row, {}, None, 0), settings)


@router.get("/reference-sets", response_model=ReferenceSetList)
def list_sets(store: StoreDep, settings: SettingsDep) -> ReferenceSetList:
    return ReferenceSetList(sets=[_set_info(view, settings) for view in store.describe_all()])


@router.get("/reference-sets/{name}", response_model=ReferenceSetInfo)
def get_set(name: str, store: StoreDep, settings: SettingsDep) -> ReferenceSetInfo:
    return _set_info(store.describe(name), settings)


@router.delete("/reference-sets/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_set(name: str, store: StoreDep) -> Response:
    store.delete_set(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/reference-sets/{name}/references",
    status_code=status.HTTP_201_CREATED,
    response_model=AddReferencesResponse,
    summary="Add reference vectors or images (embedded with the set's model); all or none",
)
async def add_references(
    name: str,
    body: AddReferencesRequest,
    store: StoreDep,
    embedder: EmbedderDep,
    settings: SettingsDep,
) -> AddReferencesResponse:
    ensure_at_most(len(body.references), settings.max_references_per_request, "references")
    row, _ = await asyncio.to_thread(store.get_set, name)
    if body.model is not None and body.model != row.model:
        raise model_mismatch(row, body.model)
    vectors = await resolve_vectors(list(body.references), row, embedder, "references")

    def save() -> AddReferencesResponse:
        ids, _ = store.add_references(
            name,
            vectors,
            countries=[r.country.value if r.country else None for r in body.references],
            sha256s=[r.sha256 for r in body.references],
        )
        return AddReferencesResponse(ids=ids, references=store.reference_count(name))

    return await asyncio.to_thread(save)


@router.delete("/reference-sets/{name}/references/{reference_id}", status_code=204)
def delete_reference(name: str, reference_id: RowId, store: StoreDep) -> Response:
    store.delete_reference(name, reference_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/score",
    response_model=ScoreResponse,
    summary="Relevance of vectors to a reference set: score, tier, accepted, per-country scores",
)
def score(body: ScoreRequest, store: StoreDep, settings: SettingsDep) -> ScoreResponse:
    ensure_at_most(len(body.vectors), settings.max_vectors_per_request, "vectors")
    centroids, whole, tiers = _scoring_target(store, body.set, body.model)
    row = centroids.reference_set
    vectors = parse_vectors(list(body.vectors), dim=row.dim)
    boundaries = boundaries_of(tiers)
    rho, _ = tiering.rho_in_force(row, tiers, settings)
    scores = relevance_scores(vectors, whole)
    countries = sorted(centroids.by_country)
    by_country = (
        np.stack([relevance_scores(vectors, centroids.by_country[c]) for c in countries], axis=1)
        if countries
        else None
    )
    results = []
    for index, value in enumerate(scores):
        result = ScoreResult(
            score=float(value),
            tier=boundaries.tier_of(float(value)),
            tier_source=TierSource(tiers.source),
            tiers_version=tiers.version,
            accepted=bool(value >= rho - 1e-9),
        )
        if by_country is not None:
            per_country = {c: float(by_country[index, j]) for j, c in enumerate(countries)}
            result.country_scores = per_country
            result.best_country = max(per_country, key=lambda c: per_country[c])
        results.append(result)
    if body.observe:
        # the next scores are tiered by the boundaries this may record; these keep theirs
        store.observe(row.name, scores.tolist(), row.references_version, settings.tier_shares)
    return ScoreResponse(
        set=row.name,
        model=row.model,
        rho=rho,
        references_version=row.references_version,
        results=results,
    )


def _calibration_out(name: str, calibration: CalibrationRow) -> CalibrationOut:
    return CalibrationOut(
        id=calibration.id or 0,
        set=name,
        created_at=calibration.created_at,
        samples=calibration.samples,
        target_precision=calibration.target_precision,
        tiers=[TierRowOut.model_validate(row) for row in calibration_table(calibration)],
        recommended_rho=calibration.recommended_rho,
        precision_at_rho=calibration.precision_at_rho,
        accepted_at_rho=calibration.accepted_at_rho,
        applied=calibration.applied,
    )


@router.post(
    "/reference-sets/{name}/calibrations",
    status_code=status.HTTP_201_CREATED,
    response_model=CalibrationOut,
    summary="Relevance per tier from labelled samples, and the lowest rho reaching a precision",
)
async def create_calibration(
    name: str,
    body: CalibrationRequest,
    store: StoreDep,
    embedder: EmbedderDep,
    settings: SettingsDep,
) -> CalibrationOut:
    ensure_at_most(len(body.samples), settings.max_calibration_samples, "samples")
    centroids, whole, tiers = await asyncio.to_thread(_scoring_target, store, name, body.model)
    row = centroids.reference_set
    vectors = await resolve_vectors(list(body.samples), row, embedder, "samples")
    scores = relevance_scores(vectors, whole)
    labels = [sample.label for sample in body.samples]
    result = calibrate(scores, labels, boundaries_of(tiers), body.target_precision)
    table = [
        {
            "tier": r.tier.value,
            "lower": r.lower,
            "upper": r.upper,
            "count": r.count,
            "yes": r.yes,
            "no": r.no,
            "not_sure": r.not_sure,
            "relevance": r.relevance,
        }
        for r in result.rows
    ]
    calibration = CalibrationRow(
        set_id=row.id or 0,
        target_precision=body.target_precision,
        recommended_rho=result.recommended_rho,
        precision_at_rho=result.precision_at_rho,
        accepted_at_rho=result.accepted_at_rho,
        samples=len(body.samples),
        table_json=json.dumps(table),
        samples_json=json.dumps(
            [[float(score), label.value] for score, label in zip(scores, labels, strict=True)]
        ),
        references_version=row.references_version,
    )
    saved = await asyncio.to_thread(store.save_calibration, name, calibration, body.apply)
    return _calibration_out(name, saved)


@router.get("/reference-sets/{name}/calibrations", response_model=CalibrationList)
def list_calibrations(name: str, store: StoreDep) -> CalibrationList:
    return CalibrationList(
        calibrations=[_calibration_out(name, c) for c in store.list_calibrations(name)]
    )


@router.post(
    "/reference-sets/{name}/calibrations/{calibration_id}/apply", response_model=ReferenceSetInfo
)
def apply_calibration(
    name: str, calibration_id: RowId, store: StoreDep, settings: SettingsDep
) -> ReferenceSetInfo:
    store.apply_calibration(name, calibration_id)
    return _set_info(store.describe(name), settings)


@router.get(
    "/reference-sets/{name}/tiers",
    response_model=TierHistory,
    summary="Every version of the set's tier boundaries, oldest first (the last is in force)",
)
def list_tiers(name: str, store: StoreDep) -> TierHistory:
    row, _ = store.get_set(name)
    return TierHistory(
        set=name,
        versions=[tiering.tiers_out(t, row.references_version) for t in store.list_tiers(name)],
    )


@router.post(
    "/reference-sets/{name}/tiers",
    status_code=status.HTTP_201_CREATED,
    response_model=TierBoundariesOut,
    summary="New tier boundaries from the paper's numbers, background shares or labels",
)
def fit_tiers(
    name: str, body: FitTiersRequest, store: StoreDep, settings: SettingsDep
) -> TierBoundariesOut:
    recorded = tiering.fit(store, name, body, settings)
    row, _ = store.get_set(name)
    return tiering.tiers_out(recorded, row.references_version)
