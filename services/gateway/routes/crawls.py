"""Crawls: an img2dataset output ingested shard by shard, and its progress."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, status

from services.common.captions import caption_language
from services.common.errors import ServiceError
from services.gateway import crawl_records
from services.gateway.crawl_sources import list_shards
from services.gateway.dependencies import (
    CaptionJobsDep,
    EngineDep,
    FilterDep,
    PageLimit,
    PageOffset,
    QueueDep,
    SettingsDep,
    Validator,
    captioner_of,
    documented_errors,
    page_size,
    within_roots,
)
from services.gateway.schemas import CrawlIn, CrawlOut, CrawlPage

router = APIRouter(
    prefix="/v1/crawls",
    tags=["crawls"],
    responses=documented_errors(400, 401, 403, 404, 413, 422, 503),
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CrawlOut,
    summary="Ingest an img2dataset output: one job per shard",
)
async def create_crawl(
    body: CrawlIn,
    key: Validator,
    settings: SettingsDep,
    engine: EngineDep,
    queue: QueueDep,
    filter_service: FilterDep,
    captions: CaptionJobsDep,
) -> CrawlOut:
    language = None
    if body.caption_language is not None:
        language = caption_language(body.caption_language).value
        captioner_of(captions, "crawl without 'caption_language'")
    reference_set = body.reference_set or settings.pipeline.reference_set
    try:
        await filter_service.get_set(reference_set)
    except ServiceError as exc:
        if exc.status_code != 404:
            raise
        raise ServiceError(
            422,
            "unknown_reference_set",
            f"no reference set {reference_set!r}",
            field="reference_set",
        ) from exc
    within_roots(body.source, settings, "source")
    shards = await asyncio.to_thread(
        list_shards, body.source, settings.storage.s3, settings.crawl.folder_shard_size
    )
    made = await asyncio.to_thread(
        lambda: crawl_records.create_crawl(
            engine,
            source=body.source,
            shards=shards,
            reference_set=reference_set,
            keep=body.policy.keep,
            rho=body.policy.rho,
            namespace=body.namespace or settings.pipeline.dedup_namespace,
            caption_language=language,
            created_by=key.key_id,
        )
    )
    for shard in shards:
        await queue.enqueue_shard(made.id, shard.name)
    return made


@router.get("", response_model=CrawlPage, summary="Crawls, the newest first")
def list_crawls(
    _: Validator,
    settings: SettingsDep,
    engine: EngineDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> CrawlPage:
    page_size(settings, limit)
    items, total = crawl_records.crawls(engine, limit, offset)
    return CrawlPage(items=items, total=total)


@router.get("/{crawl_id}", response_model=CrawlOut, summary="A crawl's progress and its tiers")
def get_crawl(crawl_id: str, _: Validator, engine: EngineDep) -> CrawlOut:
    found = crawl_records.crawl(engine, crawl_id)
    if found is None:
        raise ServiceError(404, "unknown_crawl", f"no crawl {crawl_id}")
    return found
