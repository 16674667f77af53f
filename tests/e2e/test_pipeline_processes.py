"""The distributed system as processes on 127.0.0.1: four services, arq workers, Redis,
PostgreSQL and an S3-protocol server; a worker is SIGKILLed in the middle of a job."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.common.database import make_engine
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.e2e.conftest import ROOT, start, stop, upload_until_captioned
from tests.helpers import free_port, photo_bytes, wait_for

SERVICES = ("embedder", "filter", "dedup", "captioner", "gateway")


@pytest.fixture
def system(
    models_dir: Path, tmp_path: Path, redis_url: str, s3_endpoint: str
) -> Iterator[dict[str, object]]:
    migrated_postgres()
    ports = {name: free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **{f"SEAVL_{name.upper()}_SERVER__PORT": str(port) for name, port in ports.items()},
        "SEAVL_EMBEDDER_MODELS_DIR": str(models_dir),
        "DATABASE_URL": POSTGRES_URL,
        "REDIS_URL": redis_url,
        "SEAVL_DEDUP_QDRANT_PATH": str(tmp_path / "qdrant"),
        "SEAVL_FILTER_EMBEDDER__URL": urls["embedder"],
        "SEAVL_GATEWAY_EMBEDDER__URL": urls["embedder"],
        "SEAVL_GATEWAY_FILTER__URL": urls["filter"],
        "SEAVL_GATEWAY_DEDUP__URL": urls["dedup"],
        "SEAVL_GATEWAY_CAPTIONER__URL": urls["captioner"],
        "SEAVL_CAPTIONER_EMBEDDER__URL": urls["embedder"],
        "SEAVL_STORAGE_S3__ENDPOINT": s3_endpoint,
        "SEAVL_STORAGE_S3__ACCESS_KEY": "seavl",
        "SEAVL_STORAGE_S3__SECRET_KEY": "seavl-secret",
        "SEAVL_STORAGE_S3__BUCKET": f"seavl-{uuid.uuid4().hex[:8]}",
        "SEAVL_STORAGE_S3__REGION": "us-east-1",
        "SEAVL_GATEWAY_PIPELINE__JOB_TIMEOUT_SECONDS": "5",  # a killed worker's job returns in 20 s
        "SEAVL_GATEWAY_PIPELINE__RETRY_DELAY_SECONDS": "0.5",
        "SEAVL_GATEWAY_FILTER__TIMEOUT_SECONDS": "60",
    }
    log = tmp_path / "system.log"
    processes = {name: start(["-m", f"services.{name}"], env, log, urls[name]) for name in SERVICES}
    try:
        with httpx.Client(base_url=urls["filter"], timeout=60) as client:
            client.post(
                "/v1/reference-sets", json={"name": "default", "model": "efficientnet-lite0"}
            )
            reference = {
                "image": base64.b64encode(photo_bytes("chelsea.png")).decode(),
                "country": "TH",
            }
            client.post("/v1/reference-sets/default/references", json={"references": [reference]})
        key = subprocess.run(
            [sys.executable, "-m", "services.cli", "keys", "create", "--role", "contributor"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        yield {"urls": urls, "env": env, "log": log, "processes": processes, "key": key}
    finally:
        for process in processes.values():
            os.kill(process.pid, signal.SIGCONT)
            stop(process)


def worker(system: dict[str, object], *args: str) -> subprocess.Popen[bytes]:
    env, log = system["env"], system["log"]
    assert isinstance(env, dict) and isinstance(log, Path)
    return start(["-m", "services.cli", "worker", *args], env, log)


def arq_check(system: dict[str, object]) -> int:
    env = system["env"]
    assert isinstance(env, dict)
    command = [sys.executable, "-m", "arq", "services.gateway.worker.WorkerSettings", "--check"]
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, timeout=60
    ).returncode


def test_a_killed_worker_s_job_runs_again_and_completes(system: dict[str, object]) -> None:
    urls, processes, key = system["urls"], system["processes"], system["key"]
    assert isinstance(urls, dict) and isinstance(processes, dict)
    gateway = httpx.Client(
        base_url=urls["gateway"], headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    first_worker = worker(system)
    try:
        wait_for(lambda: arq_check(system) == 0, timeout=60, interval=1)  # the health check
        os.kill(processes["filter"].pid, signal.SIGSTOP)  # the job will hang on the filter
        cat = photo_bytes("chelsea.png")
        image_id = gateway.post("/v1/images", files={"image": ("cat.jpg", cat)}).json()["id"]
        wait_for(lambda: gateway.get(f"/v1/images/{image_id}").json()["status"] == "processing", 30)
        first_worker.send_signal(signal.SIGKILL)
        first_worker.wait(timeout=10)
        os.kill(processes["filter"].pid, signal.SIGCONT)
        second_worker = worker(system)
        try:
            wait_for(
                lambda: gateway.get(f"/v1/images/{image_id}").json()["status"] == "done", 90, 0.5
            )
            done = gateway.get(f"/v1/images/{image_id}").json()
            assert done["attempts"] >= 2 and done["score"] > 0.9 and done["duplicate_of"] is None
            again = gateway.post("/v1/images", files={"image": ("cat.jpg", cat)})
            assert again.status_code == 200 and again.json()["status"] == "done"
        finally:
            stop(second_worker)
    finally:
        stop(first_worker)
        gateway.close()
    engine = make_engine(POSTGRES_URL)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM gateway_images")).scalar_one() == 1
    engine.dispose()


def test_caption_workers_caption_what_image_workers_processed(system: dict[str, object]) -> None:
    urls, env, key = system["urls"], system["env"], system["key"]
    assert isinstance(urls, dict) and isinstance(env, dict)
    check = [sys.executable, "-m", "services.cli", "worker", "--captions", "--check"]
    workers = [worker(system), worker(system, "--captions")]
    try:
        wait_for(
            lambda: subprocess.run(check, env={**os.environ, **env}, timeout=60).returncode == 0,
            timeout=60,
            interval=1,
        )
        assert isinstance(key, str)
        image = upload_until_captioned(
            urls["gateway"],
            key,
            photo_bytes("chelsea.png"),
            {"countries": "TH", "caption_language": "th"},
        )
        assert image["status"] == "done"
        [caption] = image["captions"]
        assert caption["status"] == "done" and caption["language_ok"] is True
        assert "ประเทศไทย" in caption["caption"]
    finally:
        for process in workers:
            stop(process)
