"""Fault tests, bounded: uploads while Redis is cut, and a worker SIGKILLed in what used to be
its job's last try (the tries before it found the embedder down), then every record ends
`done` (issue 9); a crawl worker SIGKILLed mid-shard, then every image counted once (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from services.gateway.config import CrawlSettings, PipelineSettings
from services.gateway.tables import CrawlShardRow, ImageRow
from services.gateway.worker import WorkerKind
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.helpers import photo_bytes, sigkilled_after, wait_for
from tests.integration.crawl_stack import finished, start, write_crawl
from tests.integration.gateway_stack import JOBS_ASK_THE_EMBEDDER, running_stack
from tests.integration.test_gateway_distributed import run_worker_until_idle
from tests.integration.test_job_limits import held_peer, start_worker_process
from tests.integration.test_reconciler import outage_peer, redis_server

PIPELINE = PipelineSettings(
    max_tries=2,
    job_timeout_seconds=3,
    retry_delay_seconds=0.1,
    retry_delay_max_seconds=0.5,
    retry_window_seconds=60,
    reconcile_grace_seconds=0,
    reconcile_interval_seconds=3600,  # at a worker's start, which is when the test needs it
)


@pytest.mark.timeout(60)
def test_uploads_during_a_redis_cut_and_a_killed_worker_all_end_done(
    tmp_path: Path, live_embedder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrated_postgres()
    for name, value in PIPELINE.model_dump().items():  # the worker process's settings
        monkeypatch.setenv(f"SEAVL_GATEWAY_PIPELINE__{name.upper()}", str(value))
    with (
        redis_server(tmp_path / "redis") as redis,
        # the jobs' embedder refusing while it restarts, then hanging (the uploads' privacy pass
        # is answered: without it an upload is refused, test_privacy.py; switched off, so that
        # the jobs ask the embedder)
        outage_peer(live_embedder, only="v1/embed") as outage,
        held_peer(60, outage.url, "v1/embed") as embedder,
        running_stack(
            POSTGRES_URL,
            tmp_path,
            embedder.url,
            redis_url=redis.url,
            pipeline=PIPELINE,
            **JOBS_ASK_THE_EMBEDDER,
        ) as stack,
    ):
        outage.down = True
        first = stack.upload(photo_bytes("rocket.jpg")).json()["id"]
        log = tmp_path / "worker.log"
        worker = start_worker_process(stack, redis.url, log)
        with sigkilled_after(worker):
            # more tries on a refusing embedder than max_tries: none of them counts
            wait_for(lambda: outage.refused >= 4 * PIPELINE.max_tries, timeout=30)
            embedder.hold()
            outage.down = False
            assert embedder.arrived.wait(20), log.read_text()[-3000:]  # a try is running
        assert stack.image(first)["status"] == "processing"  # as the killed worker left it
        redis.stop()
        refused = [stack.upload(photo_bytes(name)) for name in ("chelsea.png", "coffee.png")]
        assert [r.status_code for r in refused] == [503, 503]
        embedder.release()
        redis.start()
        # a worker's reconciler queues the refused uploads; the killed job runs again once the
        # dead worker's lease ends
        run_worker_until_idle(stack)
        with stack.engine.connect() as connection:
            ids = list(connection.exec_driver_sql("SELECT id FROM gateway_images").scalars())
        assert len(ids) == 3 and first in ids
        ended = [stack.image(image_id) for image_id in ids]
        assert [(image["status"], image["error"]) for image in ended] == [("done", None)] * 3


@pytest.mark.timeout(120)
def test_a_crawl_worker_killed_mid_shard_leaves_every_image_counted_once(
    tmp_path: Path, live_embedder: str
) -> None:
    """A crawl worker process is SIGKILLed while a shard is half read (its first batches
    recorded, the next one waiting on the embedder); once the dead worker's lease ends another
    worker reads the shard again from the start, and the crawl ends with every image counted
    once and recorded once."""
    migrated_postgres()
    crawl = CrawlSettings(roots=[str(tmp_path)], batch_size=2, shard_timeout_seconds=5)
    with (
        redis_server(tmp_path / "redis") as redis,
        held_peer(60, live_embedder) as embedder,
        running_stack(
            POSTGRES_URL, tmp_path / "stack", embedder.url, redis_url=redis.url, crawl=crawl
        ) as stack,
    ):
        held = write_crawl(tmp_path / "crawl")
        embedder.delay_seconds = 0.3  # a shard takes seconds: there is a middle to kill it in
        log = tmp_path / "worker.log"
        environment = {
            "SEAVL_GATEWAY_CRAWL__BATCH_SIZE": str(crawl.batch_size),
            "SEAVL_GATEWAY_CRAWL__SHARD_TIMEOUT_SECONDS": str(crawl.shard_timeout_seconds),
            "SEAVL_GATEWAY_CRAWL__ROOTS": json.dumps(crawl.roots),
        }
        worker = start_worker_process(stack, redis.url, log, "CrawlWorkerSettings", environment)
        body = {"source": str(tmp_path / "crawl"), "policy": {"keep": "all"}}
        crawl_id = start(stack, body)["id"]

        def shards() -> list[CrawlShardRow]:
            with Session(stack.engine) as session:
                query = select(CrawlShardRow).where(CrawlShardRow.crawl_id == crawl_id)
                return list(session.exec(query).all())

        def in_the_middle() -> bool:
            """A shard with batches recorded and more than two still to read (a batch of 2
            takes 0.3 s or more at the embedder: there is time to hold the next one)."""
            return any(s.status == "processing" and 2 <= s.seen <= 6 for s in shards())

        with sigkilled_after(worker):
            wait_for(in_the_middle, timeout=60, interval=0.02)
            embedder.hold()
            assert embedder.arrived.wait(20), log.read_text()[-3000:]
        half_read = [s for s in shards() if s.status == "processing"]
        assert any(0 < s.seen < held["images"] for s in half_read), shards()
        embedder.delay_seconds = 0
        embedder.release()
        run_worker_until_idle(stack, WorkerKind.CRAWLS)  # after the dead worker's lease
        ended = finished(stack, crawl_id)
        with Session(stack.engine) as session:
            recorded = session.exec(select(ImageRow).where(ImageRow.crawl_id == crawl_id)).all()
        tries = {s.name: s.attempts for s in shards()}
    counts = ended["images"]
    assert ended["status"] == "done", ended
    assert counts["seen"] == held["images"] + held["failed"]
    assert counts["accepted"] + counts["rejected"] + counts["duplicates"] == held["images"]
    assert counts["failed"] == held["failed"] and len(recorded) == held["images"]
    assert {h.name: tries[h.name] for h in half_read} == {h.name: 2 for h in half_read}
