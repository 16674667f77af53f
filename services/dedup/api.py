"""The dedup service's HTTP layer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.common.errors import ErrorResponse, ServiceError, ensure_at_most
from services.common.images import base64_bytes
from services.common.schemas import (
    MODEL_PATTERN,
    NAMESPACE_PATTERN,
    SHA256_PATTERN,
    DedupCheckRequest,
    DedupCheckResponse,
    DedupInsertBatch,
    DedupInsertBatchResponse,
    DedupInsertRequest,
    DedupInsertResponse,
    DroppedCollection,
    DuplicateOf,
    Neighbour,
    PHashCheck,
    VectorCheck,
)
from services.common.vectors import parse_vectors
from services.dedup.batch import BatchJobs
from services.dedup.config import DedupSettings
from services.dedup.dedup import (
    Deduplicator,
    InsertItem,
    collection_name,
    decision,
    unknown_collection,
)
from services.dedup.phash_index import phash_to_int
from services.dedup.tables import BatchJobStatus, JobRow
from services.dedup.vectors import Matrix

T = TypeVar("T")
ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse} for c in (404, 422, 503)}
router = APIRouter(prefix="/v1/dedup", tags=["dedup"], responses=ERRORS)
# an insert under a new model makes a collection, and their number is bounded
NEW_COLLECTION_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "A new model past max_collections"}
}


# A check of this many vectors, without pHashes, is answered on the event loop (1 to 2 ms of
# work at 1M points) rather than handed to a worker thread and back, whose wake-ups lengthen the
# tail on a busy machine; larger ones, and any that would wait for a write, go to a thread.
INLINE_CHECK_VECTORS = 1


def _from_app_state(attribute: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """What the lifespan put on `app.state`, as an async dependency: FastAPI runs a plain
    function dependency in a worker thread, a hand-off per dependency and request."""

    async def dependency(request: Request) -> T:
        return cast(T, getattr(request.app.state, attribute))

    dependency.__name__ = f"get_{attribute}"
    return dependency


SettingsDep = Annotated[DedupSettings, Depends(_from_app_state("settings", DedupSettings))]
DeduplicatorDep = Annotated[Deduplicator, Depends(_from_app_state("deduplicator", Deduplicator))]
JobsDep = Annotated[BatchJobs, Depends(_from_app_state("jobs", BatchJobs))]
NamespaceQuery = Annotated[str, Query(pattern=NAMESPACE_PATTERN)]
ModelQuery = Annotated[str, Query(pattern=MODEL_PATTERN)]


def _vectors(values: list[Any], settings: DedupSettings, field: str) -> Matrix:
    """Parsed unit vectors, no longer than this service's bound (each collection's index is
    sized by its vectors: one request must not make one of any size)."""
    vectors = parse_vectors(values, field=field)
    if vectors.shape[1] > settings.max_dimensions:
        raise ServiceError(
            422,
            "dimension_too_large",
            f"{field} have {vectors.shape[1]} dimensions, more than the {settings.max_dimensions}"
            " this dedup service accepts (SEAVL_DEDUP_MAX_DIMENSIONS)",
            field=field,
        )
    return vectors


def _valid_phash(value: str, field: str) -> str:
    try:
        phash_to_int(value)
    except ValueError as exc:
        raise ServiceError(
            422, "invalid_phash", f"{field}: a pHash is 16 hex digits", field=field
        ) from exc
    return value.lower()


@router.post("/check", response_model=DedupCheckResponse, summary="Near-duplicates already stored")
async def check(
    body: DedupCheckRequest, deduplicator: DeduplicatorDep, settings: SettingsDep
) -> DedupCheckResponse:
    ensure_at_most(len(body.vectors) + len(body.phashes), settings.max_vectors_per_request, "items")
    ensure_at_most(len(body.images), settings.max_images_per_check, "images")
    if not body.phashes and not body.images and len(body.vectors) <= INLINE_CHECK_VECTORS:
        answer = _check(body, deduplicator, settings, wait=False)
        if answer is not None:
            return answer
    answer = await run_in_threadpool(_check, body, deduplicator, settings, wait=True)
    assert answer is not None
    return answer


def _check(
    body: DedupCheckRequest, deduplicator: Deduplicator, settings: DedupSettings, wait: bool
) -> DedupCheckResponse | None:
    """The check's answer; None, without `wait`, if it would have to wait (for a write)."""
    threshold = body.threshold or (settings.threshold_for(body.model) if body.model else None)
    max_hamming = settings.max_hamming if body.max_hamming is None else body.max_hamming
    vector_checks: list[VectorCheck] = []
    if body.vectors:
        assert body.model is not None and threshold is not None
        vectors = _vectors(list(body.vectors), settings, "vectors")
        search = deduplicator.check_vectors if wait else deduplicator.check_vectors_without_waiting
        found = search(
            body.namespace, body.model, vectors, threshold, body.limit or settings.max_neighbours
        )
        if found is None:
            return None
        decisions = (
            deduplicator.decide_checks(
                body.namespace,
                body.model,
                vectors,
                threshold,
                settings.candidate_threshold_for(body.model),
                [base64_bytes(data, f"images[{i}]") for i, data in enumerate(body.images)],
            )
            if body.images
            else [decision(matches, threshold) for matches in found]
        )
        vector_checks = [
            VectorCheck(
                neighbours=[Neighbour(id=i, score=s) for i, s in matches], duplicate_of=decision
            )
            for matches, decision in zip(found, decisions, strict=True)
        ]
    phashes = [_valid_phash(p, f"phashes[{i}]") for i, p in enumerate(body.phashes)]
    phash_checks = (
        [
            PHashCheck(phash=p, matches=m[: body.limit or settings.max_neighbours])
            for p, m in zip(
                phashes,
                deduplicator.check_phashes(body.namespace, phashes, max_hamming),
                strict=True,
            )
        ]
        if phashes
        else []
    )
    return DedupCheckResponse(
        namespace=body.namespace,
        model=body.model,
        threshold=threshold,
        max_hamming=max_hamming,
        vectors=vector_checks,
        phashes=phash_checks,
    )


def _insert_item(body: DedupInsertRequest, settings: DedupSettings, field: str) -> InsertItem:
    vector = _vectors([body.vector], settings, field)[0] if body.vector is not None else None
    return InsertItem(
        sha256=body.id,
        model=body.model,
        vector=vector,
        phash=_valid_phash(body.phash, f"{field}.phash") if body.phash is not None else None,
        threshold=body.threshold or (settings.threshold_for(body.model) if body.model else 1.0),
        max_hamming=settings.max_hamming if body.max_hamming is None else body.max_hamming,
        match_phash=body.match_phash,
        stored=body.stored,
        candidate_threshold=settings.candidate_threshold_for(body.model) if body.model else None,
    )


def _insert_response(sha256: str, duplicate: DuplicateOf | None) -> DedupInsertResponse:
    if duplicate is None:
        return DedupInsertResponse(status="inserted", id=sha256)
    return DedupInsertResponse(status="duplicate", id=sha256, duplicate_of=duplicate)


@router.post(
    "/insert",
    response_model=DedupInsertResponse,
    responses=NEW_COLLECTION_ERRORS,
    summary="Insert unless a near-duplicate is stored",
)
def insert(
    body: DedupInsertRequest, deduplicator: DeduplicatorDep, settings: SettingsDep
) -> DedupInsertResponse:
    item = _insert_item(body, settings, "vector")
    return _insert_response(body.id, deduplicator.insert_many(body.namespace, [item])[0])


@router.post(
    "/insert-batch",
    response_model=DedupInsertBatchResponse,
    responses=NEW_COLLECTION_ERRORS,
    summary="Several inserts-if-unique in order, each also checked against those kept before it",
)
def insert_batch(
    body: DedupInsertBatch, deduplicator: DeduplicatorDep, settings: SettingsDep
) -> DedupInsertBatchResponse:
    items = [
        _insert_item(item, settings, f"items[{i}].vector") for i, item in enumerate(body.items)
    ]
    outcomes = deduplicator.insert_many(body.items[0].namespace, items)
    return DedupInsertBatchResponse(
        results=[_insert_response(i.id, o) for i, o in zip(body.items, outcomes, strict=True)]
    )


@router.delete(
    "/points/{sha256}", status_code=status.HTTP_204_NO_CONTENT, summary="Forget an image"
)
def delete_point(
    deduplicator: DeduplicatorDep,
    sha256: Annotated[str, Path(pattern=SHA256_PATTERN)],
    model: ModelQuery,
    namespace: NamespaceQuery = "default",
) -> Response:
    deduplicator.delete(namespace, model, sha256)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class CollectionStats(BaseModel):
    namespace: str
    model: str
    points: int
    dim: int
    threshold: float = Field(description="ε: the embedding alone decides from here")
    candidate_threshold: float = Field(
        description="from this cosine up, stored images are checked on their pixels (images "
        "inserted with `stored`)"
    )
    pixel_check: bool = Field(description="whether candidates are checked on their pixels")
    stored_images_missing: int = Field(
        description="images sent as stored that this service's store did not have, since it "
        "started (any collection): more than 0 means its storage setting is not the one the "
        "images are written to, and their pixels are not checked"
    )
    phashes: int = Field(description="pHashes stored in the namespace (all models)")


class CollectionList(BaseModel):
    collections: list[CollectionStats]


def _stats(
    deduplicator: Deduplicator, settings: DedupSettings, namespace: str, model: str
) -> CollectionStats:
    name = collection_name(namespace, model)
    dim = deduplicator.vectors.dim(name)
    if dim is None:
        raise unknown_collection(namespace, model)
    return CollectionStats(
        namespace=namespace,
        model=model,
        points=deduplicator.vectors.count(name),
        dim=dim,
        threshold=settings.threshold_for(model),
        candidate_threshold=settings.candidate_threshold_for(model),
        pixel_check=deduplicator.pixels is not None,
        stored_images_missing=(
            deduplicator.pixels.stored_missing if deduplicator.pixels is not None else 0
        ),
        phashes=deduplicator.phash_count(namespace),
    )


@router.get("/collections", response_model=CollectionList)
def list_collections(deduplicator: DeduplicatorDep, settings: SettingsDep) -> CollectionList:
    stats = []
    for name in deduplicator.vectors.collections():
        namespace, _, model = name.partition("__")
        if model:
            stats.append(_stats(deduplicator, settings, namespace, model))
    return CollectionList(collections=stats)


@router.get("/collections/{namespace}/{model}", response_model=CollectionStats)
def collection_stats(
    namespace: str, model: str, deduplicator: DeduplicatorDep, settings: SettingsDep
) -> CollectionStats:
    return _stats(deduplicator, settings, namespace, model)


@router.delete(
    "/collections/{namespace}/{model}",
    response_model=DroppedCollection,
    summary="Forget a collection (its images are inserted again by `seavl dedup reindex`)",
)
def drop_collection(
    deduplicator: DeduplicatorDep,
    namespace: Annotated[str, Path(pattern=NAMESPACE_PATTERN)],
    model: Annotated[str, Path(pattern=MODEL_PATTERN)],
) -> DroppedCollection:
    points = deduplicator.drop(namespace, model)
    return DroppedCollection(namespace=namespace, model=model, points=points)


class BatchRequest(BaseModel):
    namespace: str = Field(default="default", pattern=NAMESPACE_PATTERN)
    model: str = Field(pattern=MODEL_PATTERN)
    threshold: float | None = Field(default=None, gt=0, le=1)


class BatchJob(BaseModel):
    id: str
    namespace: str
    model: str
    threshold: float
    status: BatchJobStatus = Field(description="interrupted: its replica stopped; run it again")
    processed: int
    total: int
    groups: int
    kept: list[str] | None = None
    duplicate_groups: list[dict[str, Any]] | None = None
    error: str | None = None


def _job_out(job: JobRow) -> BatchJob:
    result = json.loads(job.result_json) if job.result_json else {}
    return BatchJob(
        id=job.id,
        namespace=job.namespace,
        model=job.model,
        threshold=job.threshold,
        status=BatchJobStatus(job.status),
        processed=job.processed,
        total=job.total,
        groups=job.groups,
        kept=result.get("kept"),
        duplicate_groups=result.get("groups"),
        error=job.error,
    )


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchJob,
    summary="Group the stored near-duplicates of a collection, in the background",
)
def start_batch(body: BatchRequest, jobs: JobsDep, settings: SettingsDep) -> BatchJob:
    threshold = body.threshold or settings.threshold_for(body.model)
    return _job_out(jobs.start(body.namespace, body.model, threshold))


@router.get(
    "/batch/{job_id}", response_model=BatchJob, summary="Progress, and the kept list when done"
)
def get_batch(job_id: str, jobs: JobsDep) -> BatchJob:
    return _job_out(jobs.get(job_id))
