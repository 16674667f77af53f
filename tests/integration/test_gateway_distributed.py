"""The distributed parts for real: arq on Redis, PostgreSQL, and an S3-protocol server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.common.storage import S3Store, StorageSettings
from services.embedder.app import create_app as create_embedder
from services.embedder.config import EmbedderSettings
from services.gateway.config import PipelineSettings
from services.gateway.worker import WorkerKind, make_worker
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.helpers import free_port, live_server, photo_bytes, s3_settings
from tests.integration.gateway_stack import Stack, running_stack
from tests.integration.test_embedder_api import metric


def run_worker_until_idle(stack: Stack, kind: WorkerKind = WorkerKind.IMAGES) -> None:
    """An arq worker (of images, captions or crawls) in burst mode: it runs every job queued
    for it, then returns."""

    async def burst() -> None:
        worker = make_worker(stack.settings, burst=True, kind=kind)  # binds this loop
        try:
            await worker.async_run()
        finally:
            await worker.close()

    asyncio.run(burst())


@pytest.fixture
def postgres_url() -> str:
    migrated_postgres()
    return POSTGRES_URL


def test_uploads_go_through_redis_workers_and_s3(
    postgres_url: str, redis_url: str, s3_endpoint: str, tmp_path: Path, models_dir: Path
) -> None:
    """The gateway stores in S3 and sends keys: the embedder reads them from the same bucket.
    A job carries through Redis the embedding the upload's privacy pass answered: only the
    image that was blurred is embedded again (another replica may answer the worker)."""
    storage = StorageSettings(s3=s3_settings(s3_endpoint))
    s3 = storage.s3
    assert s3 is not None
    embedder = EmbedderSettings(models_dir=models_dir, storage=storage)
    with (
        live_server(create_embedder(embedder)) as embedder_url,
        running_stack(
            postgres_url, tmp_path, embedder_url, redis_url=redis_url, storage=storage
        ) as stack,
    ):
        cat = photo_bytes("chelsea.png")
        first = stack.upload(cat, countries="TH").json()
        second = stack.upload(photo_bytes("coffee.png")).json()
        face = stack.upload(photo_bytes("astronaut.png")).json()  # blurred before it is stored
        assert stack.image(first["id"])["status"] == "queued"  # no worker yet: it waits in Redis
        assert stack.upload(cat).status_code == 200  # same bytes: the same record and job
        with httpx.Client(base_url=embedder_url) as client:
            embeds = metric(client, "seavl_embedder_images_total", outcome="ok")
            run_worker_until_idle(stack)
            embeds = metric(client, "seavl_embedder_images_total", outcome="ok") - embeds
        done = [stack.image(i) for i in (first["id"], second["id"], face["id"])]
        assert [d["status"] for d in done] == ["done", "done", "done"]
        assert done[0]["best_country"] == "TH" and done[0]["attempts"] == 1
        assert [d["privacy"]["blurred"] for d in done] == [False, False, True]
        assert {d["model"] for d in done} == {"efficientnet-lite0"}
        assert embeds == 1  # the blurred image alone, by its key in S3
        store = S3Store(s3)
        assert store.count() == 3 and store.get(first["id"]) == cat
        run_worker_until_idle(stack)  # running again changes nothing
        assert stack.image(first["id"])["attempts"] == 1


def test_a_dependency_down_is_retried_then_recorded_as_failure(
    postgres_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    pipeline = PipelineSettings(retry_delay_seconds=0.1, retry_window_seconds=1)
    with running_stack(
        postgres_url, tmp_path, live_embedder, redis_url=redis_url, pipeline=pipeline
    ) as stack:
        image_id = stack.upload(photo_bytes("rocket.jpg")).json()["id"]
        stack.settings.dedup.url = f"http://127.0.0.1:{free_port()}"  # the worker's dedup is down
        run_worker_until_idle(stack)
        failed = stack.image(image_id)
        assert failed["status"] == "failed" and failed["attempts"] == 1  # down: not counted
        assert failed["error"].startswith("gave up after retrying for 1 s: ")
        assert "dedup unreachable" in failed["error"]


def test_arq_check_reports_worker_health(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    command = [sys.executable, "-m", "arq", "services.gateway.worker.WorkerSettings", "--check"]
    assert subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 1
