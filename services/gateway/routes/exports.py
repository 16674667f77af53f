"""Exports: the curated set written as a dataset (WebDataset, Parquet, a card), and their
progress."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, status

from services.common.errors import ServiceError
from services.gateway import export_records
from services.gateway.dataset_writer import check_destination
from services.gateway.dependencies import (
    EngineDep,
    PageLimit,
    PageOffset,
    QueueDep,
    SettingsDep,
    Validator,
    documented_errors,
    page_size,
    within_roots,
)
from services.gateway.schemas import ExportIn, ExportOut, ExportPage

router = APIRouter(
    prefix="/v1/exports",
    tags=["exports"],
    responses=documented_errors(400, 401, 403, 404, 413, 422, 503),
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExportOut,
    summary="Write the curated set as a dataset: WebDataset shards, Parquet, a dataset card",
)
async def create_export(
    body: ExportIn, key: Validator, settings: SettingsDep, engine: EngineDep, queue: QueueDep
) -> ExportOut:
    within_roots(body.destination, settings, "destination")
    await asyncio.to_thread(check_destination, body.destination, settings.storage.s3)
    made = await asyncio.to_thread(export_records.create_export, engine, body, key.key_id)
    await queue.enqueue_export(made.id)
    return made


@router.get("", response_model=ExportPage, summary="Exports, the newest first")
def list_exports(
    _: Validator,
    settings: SettingsDep,
    engine: EngineDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> ExportPage:
    items, total = export_records.exports(engine, page_size(settings, limit), offset)
    return ExportPage(items=items, total=total)


@router.get("/{export_id}", response_model=ExportOut, summary="An export's progress")
def get_export(export_id: str, _: Validator, engine: EngineDep) -> ExportOut:
    found = export_records.export(engine, export_id)
    if found is None:
        raise ServiceError(404, "unknown_export", f"no export {export_id}")
    return found
