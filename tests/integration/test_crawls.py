"""Crawl ingest through the gateway (in-process jobs), with the real embedder, filter and dedup:
img2dataset's webdataset shards in, images recorded and counted, each exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlmodel import Session, select

from services.captioner.app import create_app as create_captioner
from services.captioner.config import CaptionerSettings
from services.common.clients import ServiceClientSettings
from services.gateway.auth import Role
from services.gateway.config import CrawlSettings
from services.gateway.crawls import CrawlIngest
from services.gateway.intake import accept
from services.gateway.pipeline import Pipeline
from services.gateway.tables import CaptionRow, CrawlRejectRow, CrawlShardRow, ImageRow
from services.gateway.worker import WorkerKind
from tests.helpers import encode, forward, has_gps, live_server, photo, wait_for
from tests.integration.crawl_stack import crawl_stack, finished, start, write_crawl
from tests.integration.gateway_stack import Stack, running_stack
from tests.integration.test_gateway_distributed import run_worker_until_idle

__all__ = ["crawl_stack"]  # the fixture, used by name


def test_a_crawl_is_ingested_counted_and_recorded(crawl_stack: Stack, tmp_path: Path) -> None:
    held = write_crawl(tmp_path / "crawl")
    queued = start(crawl_stack, {"source": str(tmp_path / "crawl"), "policy": {"keep": "all"}})
    assert queued["shards"]["total"] == held["shards"] and queued["status"] == "queued"
    crawl = finished(crawl_stack, queued["id"])
    images = crawl["images"]
    assert crawl["status"] == "done", crawl
    assert images["seen"] == held["images"] + held["failed"]
    assert images["failed"] == held["failed"]
    # each image in one count: seen = accepted + rejected + duplicates + failed
    kept = images["accepted"] + images["rejected"] + images["duplicates"]
    assert kept == held["images"] == images["stored"]
    assert images["duplicates"] >= 1  # the near-copy
    assert sum(t["count"] for t in crawl["tiers"]) == held["images"]
    assert sum(t["share"] for t in crawl["tiers"]) == pytest.approx(1.0)
    assert any("404" in reason for reason in crawl["failures"]), crawl["failures"]
    assert crawl["images_per_second"] > 0 and crawl["eta_seconds"] == 0
    # every score of the crawl fed its set's sketch, which `shares` boundaries settle on
    reference_set = crawl_stack.gateway.get(
        "/v1/reference-sets/default", headers=crawl_stack.as_role(Role.ADMIN)
    ).json()
    assert reference_set["observed_scores"] == held["images"]
    with Session(crawl_stack.engine) as session:
        rows = session.exec(select(ImageRow).where(ImageRow.crawl_id == queued["id"])).all()
    assert len(rows) == held["images"]
    store = crawl_stack.settings.storage.open()
    for row in rows:
        assert row.source == "crawl" and row.status == "done" and row.tier is not None
        assert (row.reference_set, row.tier_source, row.tiers_version) == ("default", "shares", 1)
        assert row.url == f"http://127.0.0.1/{row.sample_key}.jpg"
        assert row.alt_text == f"alt text {row.sample_key}"
        assert row.original_width == 2 * row.width
        stored = store.get(row.id)
        assert not has_gps(stored)  # location stripped as for uploads


def test_keep_accepted_stores_only_what_passes(crawl_stack: Stack, tmp_path: Path) -> None:
    held = write_crawl(tmp_path / "crawl")
    nothing = finished(
        crawl_stack,
        start(crawl_stack, {"source": str(tmp_path / "crawl"), "policy": {"rho": 1.0}})["id"],
    )
    assert nothing["images"]["accepted"] == nothing["images"]["stored"] == 0
    assert nothing["images"]["rejected"] == held["images"]
    with Session(crawl_stack.engine) as session:
        rejects = session.exec(
            select(CrawlRejectRow).where(CrawlRejectRow.crawl_id == nothing["id"])
        ).all()
        assert session.exec(select(ImageRow).where(ImageRow.crawl_id == nothing["id"])).all() == []
    assert len(rejects) == held["images"]
    assert all(r.url and r.tier and r.score is not None for r in rejects)


def test_a_rerun_takes_over_finished_shards_and_counts_nothing_twice(
    crawl_stack: Stack, tmp_path: Path
) -> None:
    write_crawl(tmp_path / "crawl")
    body = {"source": str(tmp_path / "crawl"), "policy": {"keep": "all"}}
    first = finished(crawl_stack, start(crawl_stack, body)["id"])
    again = finished(crawl_stack, start(crawl_stack, body)["id"])
    assert again["images"] == first["images"] and again["tiers"] == first["tiers"]
    with Session(crawl_stack.engine) as session:
        shards = session.exec(
            select(CrawlShardRow).where(CrawlShardRow.crawl_id == again["id"])
        ).all()
        recorded = session.exec(select(ImageRow)).all()
    assert {s.reused_from for s in shards} == {first["id"]}
    assert len(recorded) == first["images"]["stored"]


def test_a_shard_tried_again_counts_from_zero(crawl_stack: Stack, tmp_path: Path) -> None:
    """A worker killed mid-shard leaves it processing: the next try counts it whole, once."""
    write_crawl(tmp_path / "crawl")
    body = {"source": str(tmp_path / "crawl"), "policy": {"keep": "all"}}
    crawl = finished(crawl_stack, start(crawl_stack, body)["id"])
    with Session(crawl_stack.engine) as session:
        shard = session.exec(
            select(CrawlShardRow).where(CrawlShardRow.crawl_id == crawl["id"])
        ).first()
        assert shard is not None
        counted = (shard.seen, shard.accepted, shard.rejected, shard.duplicates, shard.stored)
        shard.status = "processing"  # as a killed try leaves it
        session.add(shard)
        session.commit()
        name = shard.name

    class NoCaptions:
        async def enqueue_caption(self, job: object) -> None:
            raise AssertionError("no caption was asked for")

    async def run_again() -> str:
        pipeline = Pipeline.create(crawl_stack.settings, crawl_stack.engine)
        try:
            return await CrawlIngest(pipeline, NoCaptions()).run_shard(crawl["id"], name, 2)
        finally:
            await pipeline.close()

    assert asyncio.run(run_again()) == "done"
    with Session(crawl_stack.engine) as session:
        shard = session.get(CrawlShardRow, (crawl["id"], name))
        assert shard is not None
        assert (
            shard.seen,
            shard.accepted,
            shard.rejected,
            shard.duplicates,
            shard.stored,
        ) == counted
        assert shard.attempts == 2
    again = finished(crawl_stack, crawl["id"])
    assert again["images"] == crawl["images"]


def test_bad_crawls_are_refused_before_any_job(crawl_stack: Stack, tmp_path: Path) -> None:
    write_crawl(tmp_path / "crawl")

    def refused(body: dict[str, Any], role: Role = Role.VALIDATOR) -> tuple[int, str]:
        response = crawl_stack.gateway.post(
            "/v1/crawls", json=body, headers=crawl_stack.as_role(role)
        )
        return response.status_code, response.json()["error"]["code"]

    assert refused({"source": str(tmp_path / "nowhere")})[0] == 404
    assert refused({"source": "/etc"}) == (422, "location_not_allowed")
    unknown_set = {"source": str(tmp_path / "crawl"), "reference_set": "nope"}
    assert refused(unknown_set) == (422, "unknown_reference_set")
    assert refused({"source": str(tmp_path / "crawl")}, Role.CONTRIBUTOR) == (403, "forbidden")
    listed = crawl_stack.gateway.get("/v1/crawls", headers=crawl_stack.as_role(Role.VALIDATOR))
    assert listed.json() == {"items": [], "total": 0}


def test_the_cli_queues_a_crawl_and_follows_it_to_the_end(
    crawl_stack: Stack, tmp_path: Path
) -> None:
    held = write_crawl(tmp_path / "crawl")
    seavl = Path(sys.executable).with_name("seavl")
    command = [str(seavl), "crawl", "ingest", str(tmp_path / "crawl"), "--keep", "all", "--wait"]
    command += ["--url", str(crawl_stack.gateway.base_url).rstrip("/")]
    command += ["--api-key", crawl_stack.keys[Role.VALIDATOR]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith(f"{held['shards']} shards queued")
    assert f"shards {held['shards']}/{held['shards']}" in done.stdout
    assert any(line.strip().endswith("%") for line in lines)  # the tier table: tier, count, share
    assert "failed: " in done.stdout  # the reasons
    refused = subprocess.run(
        [str(seavl), "crawl", "ingest", str(tmp_path / "nowhere"), "--url", command[8]]
        + ["--api-key", crawl_stack.keys[Role.VALIDATOR]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "crawl_source_not_found" in refused.stdout, refused.stdout


def test_a_crawl_asks_a_caption_for_each_image_it_keeps(
    database_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """With `caption_language`, each kept image that is not a duplicate gets a caption job
    (the offline captioner here), and the export-ready record carries it."""
    held = write_crawl(tmp_path / "crawl")
    captioner = CaptionerSettings(embedder=ServiceClientSettings(url=live_embedder))
    with (
        live_server(create_captioner(captioner)) as captioner_url,
        running_stack(
            database_url,
            tmp_path / "stack",
            live_embedder,
            crawl=CrawlSettings(roots=[str(tmp_path)], batch_size=5),
            captioner=ServiceClientSettings(url=captioner_url, attempts=1, timeout_seconds=30),
        ) as stack,
    ):
        body = {
            "source": str(tmp_path / "crawl"),
            "policy": {"keep": "all"},
            "caption_language": "vi",
        }
        crawl = finished(stack, start(stack, body)["id"])
        unique = crawl["images"]["accepted"] + crawl["images"]["rejected"]
        assert unique == held["images"] - crawl["images"]["duplicates"]

        def captions() -> list[CaptionRow]:
            with Session(stack.engine) as session:
                return list(session.exec(select(CaptionRow)).all())

        wait_for(lambda: sum(c.status == "done" for c in captions()) == unique, timeout=120)
        assert {c.language for c in captions()} == {"vi"} and len(captions()) == unique
        assert all(c.caption for c in captions())


def test_a_crawled_face_is_blurred_before_it_is_stored(crawl_stack: Stack, tmp_path: Path) -> None:
    """A plain folder crawled: the privacy pass of uploads runs on crawled images too."""
    folder = tmp_path / "photos"
    folder.mkdir()
    astronaut = photo("astronaut.png")
    astronaut.putpixel((0, 0), tuple(int(b) for b in os.urandom(3)))  # bytes no test stored
    original = encode(astronaut, "PNG")
    (folder / "astronaut.png").write_bytes(original)
    queued = start(crawl_stack, {"source": str(folder), "policy": {"keep": "all"}})
    assert finished(crawl_stack, queued["id"])["status"] == "done"
    with Session(crawl_stack.engine) as session:
        (row,) = session.exec(select(ImageRow).where(ImageRow.crawl_id == queued["id"])).all()
    assert (row.faces, row.blurred) == (1, True)
    stored = crawl_stack.settings.storage.open()
    assert hashlib.sha256(stored.get(row.id)).hexdigest() == row.id
    assert not stored.exists(accept(original, crawl_stack.settings.images).sha256)


def refusing_dedup(target: str, message: str) -> FastAPI:
    """A dedup that refuses every insert with a 422 (as one that no longer takes vectors of
    this size would) and passes the rest on to the real one at `target`."""
    app = FastAPI()

    @app.post("/v1/dedup/insert-batch")
    async def refuse() -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "invalid_request", "message": message}}, status_code=422
        )

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def other(path: str, request: Request) -> Response:
        return await forward(target, path, request)

    return app


def test_a_batch_dedup_refuses_is_recorded_failed_and_the_shard_goes_on(
    database_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """Dedup refusing a batch for good (a 4xx, not down): its images are counted and
    recorded failed with the reason, so the bytes already stored have a record, and the crawl
    ends instead of its shards staying in "processing"."""
    held = write_crawl(tmp_path / "crawl")
    crawl_settings = CrawlSettings(roots=[str(tmp_path)], batch_size=5)
    with running_stack(
        database_url, tmp_path / "stack", live_embedder, crawl=crawl_settings, redis_url=redis_url
    ) as stack:
        queued = start(stack, {"source": str(tmp_path / "crawl"), "policy": {"keep": "all"}})
        message = "vectors of 1280 dimensions, the collection holds 512"
        with live_server(refusing_dedup(stack.settings.dedup.url, message)) as refusing:
            stack.settings.dedup.url = refusing  # the crawl worker's dedup
            run_worker_until_idle(stack, WorkerKind.CRAWLS)
        crawl = stack.gateway.get(
            f"/v1/crawls/{queued['id']}", headers=stack.as_role(Role.VALIDATOR)
        ).json()
        with Session(stack.engine) as session:
            rows = session.exec(select(ImageRow).where(ImageRow.crawl_id == queued["id"])).all()
        store = stack.settings.storage.open()
    assert crawl["status"] == "done", crawl
    images = crawl["images"]
    assert images["failed"] == held["failed"] + held["images"]
    assert images["accepted"] == images["rejected"] == images["duplicates"] == 0
    reason = f"dedup: invalid_request: {message}"
    assert crawl["failures"][reason] == held["images"], crawl["failures"]
    assert {(row.status, row.error) for row in rows} == {("failed", reason)}
    # no bytes without a record: each kept image (one per image: keep all) has its record,
    # under the key its bytes (blurred, where a face was found) are stored by
    assert len(rows) == held["images"] and all(store.exists(row.id) for row in rows)
