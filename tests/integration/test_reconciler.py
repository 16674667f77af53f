"""Jobs that would stay stuck: an upload whose enqueue failed (Redis away), a dependency down for
longer than `max_tries` delays, and workers that lose Redis. Records end `done`."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from services.common.database import session_scope
from services.gateway.config import PipelineSettings
from services.gateway.tables import ImageRow
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.helpers import forward, free_port, live_server, photo_bytes, wait_for
from tests.integration.gateway_stack import JOBS_ASK_THE_EMBEDDER, Stack, running_stack
from tests.integration.test_gateway_distributed import run_worker_until_idle
from tests.integration.test_job_limits import start_worker_process


class RedisServer:
    """A redis-server of the test's own on a free port, that the test can stop and start again
    (its data kept in an append-only file, as a Redis with persistence keeps it)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.folder),
            "--daemonize",
            "no",
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self.answers, timeout=10)

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class OutagePeer:
    """A peer in front of a real service that, while `down`, answers 503 at once (as a service
    restarting behind its load balancer does), and counts the requests it refused. With `only`,
    the outage is that path's (the jobs' `v1/embed`, say, while the uploads' privacy pass on
    `v1/detect` is answered: an upload cannot be stored without it, see test_privacy.py; and
    `JOBS_ASK_THE_EMBEDDER`, so that the jobs do ask)."""

    def __init__(self, target: str, only: str | None = None) -> None:
        self.target = target
        self.only = only
        self.down = False
        self.refused = 0
        self.url = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def answer(path: str, request: Request) -> Response:
            if self.down and (self.only is None or path == self.only):
                self.refused += 1
                return JSONResponse(
                    {"error": {"code": "unavailable", "message": "restarting"}},
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
            return await forward(self.target, path, request)

        return app


@contextmanager
def outage_peer(target: str, only: str | None = None) -> Iterator[OutagePeer]:
    peer = OutagePeer(target, only)
    with live_server(peer.app()) as url:
        peer.url = url
        yield peer


@pytest.fixture
def postgres_url() -> str:
    migrated_postgres()
    return POSTGRES_URL


# the reconciler runs when a worker starts (and then hourly: a burst worker ends on its own)
RECONCILE_AT_ONCE = PipelineSettings(reconcile_grace_seconds=0, reconcile_interval_seconds=3600)


def test_an_upload_refused_while_redis_was_away_is_processed_once_it_is_back(
    postgres_url: str, tmp_path: Path, live_embedder: str
) -> None:
    with (
        redis_server(tmp_path / "redis") as server,
        running_stack(
            postgres_url,
            tmp_path,
            live_embedder,
            redis_url=server.url,
            pipeline=RECONCILE_AT_ONCE,
        ) as stack,
    ):
        server.stop()
        refused = stack.upload(photo_bytes("rocket.jpg"))
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert refused.json()["error"]["code"] == "unavailable"
        with stack.engine.connect() as connection:
            [image_id] = connection.exec_driver_sql("SELECT id FROM gateway_images").scalars()
        server.start()
        run_worker_until_idle(stack)  # its reconciler finds the record without a job
        done = stack.image(image_id)
        assert (done["status"], done["error"], done["attempts"]) == ("done", None, 1)


@pytest.mark.parametrize("queue", ["in-process", "arq"])
def test_a_dependency_outage_within_the_retry_window_fails_nothing(
    queue: str, postgres_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """The embedder refuses for longer than `max_tries` retries take; the job waits it out."""
    pipeline = PipelineSettings(
        max_tries=2, retry_delay_seconds=0.1, retry_delay_max_seconds=0.4, retry_window_seconds=60
    )
    extra: dict[str, Any] = {"redis_url": redis_url} if queue == "arq" else {}
    with (
        outage_peer(live_embedder, only="v1/embed") as embedder,
        running_stack(
            postgres_url,
            tmp_path,
            embedder.url,
            pipeline=pipeline,
            **JOBS_ASK_THE_EMBEDDER,
            **extra,
        ) as stack,
    ):
        embedder.down = True
        image_id = stack.upload(photo_bytes("coffee.png")).json()["id"]
        worker = threading.Thread(target=run_worker_until_idle, args=(stack,))
        if queue == "arq":
            worker.start()
        # well past max_tries tries (each try's client asks twice)
        wait_for(lambda: embedder.refused >= 4 * pipeline.max_tries, timeout=30)
        assert stack.image(image_id)["status"] != "failed"
        embedder.down = False
        if queue == "arq":
            worker.join(timeout=60)
        done = stack.wait_done(image_id, timeout=30)
        assert (done["status"], done["error"], done["attempts"]) == ("done", None, 1)


def test_a_dependency_outage_past_the_retry_window_fails_with_the_reason(
    postgres_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    pipeline = PipelineSettings(retry_delay_seconds=0.1, retry_window_seconds=1)
    with (
        outage_peer(live_embedder, only="v1/embed") as embedder,
        running_stack(
            postgres_url,
            tmp_path,
            embedder.url,
            pipeline=pipeline,
            redis_url=redis_url,
            **JOBS_ASK_THE_EMBEDDER,
        ) as stack,
    ):
        embedder.down = True
        image_id = stack.upload(photo_bytes("coffee.png")).json()["id"]
        run_worker_until_idle(stack)
        failed = stack.image(image_id)
        assert failed["status"] == "failed"
        assert failed["error"].startswith("gave up after retrying for 1 s: ")
        assert "embedder" in failed["error"]


def wait_until_waiting_for_redis(worker: subprocess.Popen[bytes], log: Path) -> None:
    """Until the worker says it waits for Redis; fails if it exited instead."""
    wait_for(
        lambda: worker.poll() is not None or "Redis is unreachable" in log.read_text(),
        timeout=30,
    )
    assert worker.poll() is None, log.read_text()[-3000:]


def test_a_worker_keeps_running_through_a_redis_restart(
    postgres_url: str, tmp_path: Path, live_embedder: str
) -> None:
    with (
        redis_server(tmp_path / "redis") as server,
        running_stack(postgres_url, tmp_path, live_embedder, redis_url=server.url) as stack,
    ):
        log, late_log = tmp_path / "worker.log", tmp_path / "late-worker.log"
        worker = start_worker_process(stack, server.url, log)
        workers = [worker]
        try:
            health = redis.Redis.from_url(server.url)
            wait_for(lambda: health.exists("arq:queue:health-check") == 1, timeout=60)
            health.close()
            server.stop()
            late = start_worker_process(stack, server.url, late_log)  # starts while it is away
            workers.append(late)
            for process, output in ((worker, log), (late, late_log)):
                wait_until_waiting_for_redis(process, output)
            server.start()
            uploads = [stack.upload(photo_bytes(n)) for n in ("chelsea.png", "coffee.png")]
            ended = [stack.wait_done(u.json()["id"], timeout=60) for u in uploads]
            assert [image["status"] for image in ended] == ["done", "done"], log.read_text()
            assert worker.poll() is None and late.poll() is None
            assert log.read_text().count("Redis is unreachable") == 1  # once per outage
        finally:
            for process in workers:
                process.kill()
                process.wait()


def lost_record(stack: Stack, data: bytes, attempts: int) -> str:
    """A stored image whose record is `processing` with no job anywhere, as a process that
    stopped mid-job (or a job crashed on a bug) leaves it."""
    image_id = hashlib.sha256(data).hexdigest()
    stack.settings.storage.open().put(image_id, data)
    with session_scope(stack.engine) as session:
        session.add(
            ImageRow(
                id=image_id,
                status="processing",
                format="jpeg",
                size_bytes=len(data),
                width=1,
                height=1,
                attempts=attempts,
            )
        )
    return image_id


def reconciler_count(stack: Stack, outcome: str) -> float:
    metrics = stack.gateway.get("/metrics").text
    line = f'seavl_gateway_reconciler_{outcome}_total{{kind="image"}} '
    found = [float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line)]
    return found[0] if found else 0.0


def test_the_in_process_reconciler_requeues_lost_jobs_and_fails_those_out_of_tries(
    tmp_path: Path, live_embedder: str
) -> None:
    pipeline = PipelineSettings(
        max_tries=2, reconcile_grace_seconds=0, reconcile_interval_seconds=0.2
    )
    with running_stack(
        f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder, pipeline=pipeline
    ) as stack:
        lost = lost_record(stack, photo_bytes("rocket.jpg"), attempts=1)
        spent = lost_record(stack, photo_bytes("coffee.png"), attempts=2)
        done = stack.wait_done(lost, timeout=30)
        assert (done["status"], done["error"]) == ("done", None)
        failed = stack.wait_done(spent, timeout=30)
        assert failed["status"] == "failed"
        assert failed["error"] == "gave up after 2 tries: its job was lost"
        assert reconciler_count(stack, "requeued") == 1
        assert reconciler_count(stack, "failed") == 1
