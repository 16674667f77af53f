"""Jobs that outrun their limits end `done` or `failed`, never left `queued` or `processing`:
a try past `PIPELINE__JOB_TIMEOUT_SECONDS` (on arq workers and in the gateway's process), and a
job whose last try's worker was killed (arq's "max retries exceeded")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from services.common.clients import ServiceClientSettings
from services.gateway.config import PipelineSettings
from services.gateway.worker import WorkerKind
from tests.conftest import POSTGRES_URL, migrated_postgres
from tests.helpers import (
    encode,
    forward,
    live_server,
    noise_image,
    photo_bytes,
    sigkilled_after,
    wait_for,
)
from tests.integration.gateway_stack import JOBS_ASK_THE_EMBEDDER, Stack, running_stack
from tests.integration.test_gateway_distributed import run_worker_until_idle

ROOT = Path(__file__).resolve().parents[2]


class HeldPeer:
    """A peer in front of a real service (or of none) that can hang: while held, a request waits
    `hold_seconds` (or until released) and then answers 503, as an overloaded peer would; else
    it is forwarded, `delay_seconds` late."""

    def __init__(
        self, hold_seconds: float, target: str | None = None, only: str | None = None
    ) -> None:
        """`only`: the one path held (the jobs' `v1/embed`, say, while other calls go
        through); every path when None."""
        self.hold_seconds = hold_seconds
        self.target = target
        self.only = only
        self.delay_seconds = 0.0
        self.url = ""
        self._holding = threading.Event()
        self._released = threading.Event()
        self.arrived = threading.Event()  # a request is being held
        if target is None:
            self._holding.set()

    def hold(self) -> None:
        self._holding.set()

    def release(self) -> None:
        """The held requests answer 503; new ones are forwarded again."""
        if self.target is not None:
            self._holding.clear()
        self._released.set()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def answer(path: str, request: Request) -> Response:
            held = self._holding.is_set() and (self.only is None or path == self.only)
            if held or self.target is None:
                self.arrived.set()
                await asyncio.to_thread(self._released.wait, self.hold_seconds)
                return JSONResponse(
                    {"error": {"code": "unavailable", "message": "overloaded"}},
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(self.delay_seconds)
            return await forward(self.target, path, request)

        return app


@contextmanager
def held_peer(
    hold_seconds: float, target: str | None = None, only: str | None = None
) -> Iterator[HeldPeer]:
    peer = HeldPeer(hold_seconds, target, only)
    with live_server(peer.app()) as url:
        peer.url = url
        try:
            yield peer
        finally:
            peer.release()  # before the server stops: it waits for the requests it holds


@pytest.fixture
def postgres_url() -> str:
    migrated_postgres()
    return POSTGRES_URL


def test_an_arq_job_past_its_time_limit_is_retried_then_recorded_as_failed(
    postgres_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    pipeline = PipelineSettings(max_tries=2, retry_delay_seconds=0, job_timeout_seconds=1)
    with (
        held_peer(2, live_embedder, "v1/embed") as embedder,
        running_stack(
            postgres_url,
            tmp_path,
            embedder.url,
            redis_url=redis_url,
            pipeline=pipeline,
            **JOBS_ASK_THE_EMBEDDER,
        ) as stack,
    ):
        image_id = stack.upload(photo_bytes("rocket.jpg")).json()["id"]
        embedder.hold()  # the worker's embedder hangs on every try
        run_worker_until_idle(stack)  # returns once the stopped tries' threads have ended too
        failed = stack.image(image_id)
        assert failed["status"] == "failed" and failed["attempts"] == 2
        assert failed["error"] == "gave up after 2 tries: timed out after 1 s"


def test_an_arq_job_whose_last_try_was_killed_is_recorded_as_failed(
    postgres_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    """For real: a worker process is SIGKILLed during the job's only try, which leaves arq's
    try count at its limit; once the dead worker's lease ends, the next worker finishes the job
    (arq alone would drop it with "max retries exceeded" and leave the record `processing`)."""
    pipeline = PipelineSettings(max_tries=1, job_timeout_seconds=3)
    with (
        held_peer(60, live_embedder, "v1/embed") as embedder,
        running_stack(
            postgres_url,
            tmp_path,
            embedder.url,
            redis_url=redis_url,
            pipeline=pipeline,
            **JOBS_ASK_THE_EMBEDDER,
        ) as stack,
    ):
        embedder.hold()
        cat = photo_bytes("chelsea.png")
        image_id = stack.upload(cat).json()["id"]
        log = tmp_path / "worker.log"
        worker = start_worker_process(stack, redis_url, log)
        with sigkilled_after(worker):
            assert embedder.arrived.wait(60), log.read_text()[-3000:]  # the job is running
        assert stack.image(image_id)["status"] == "processing"  # as the killed worker left it
        run_worker_until_idle(stack)  # waits out the dead worker's lease, then runs the job
        failed = stack.image(image_id)
        assert failed["status"] == "failed" and failed["attempts"] == 1
        assert failed["error"] == "gave up after 1 tries: its last try was interrupted"
        again = stack.upload(cat)  # the same bytes again: the existing record, as documented
        assert again.status_code == 200
        assert again.json()["status"] == "failed" and again.json()["error"] == failed["error"]


def start_worker_process(
    stack: Stack,
    redis_url: str,
    log: Path,
    worker: str = "WorkerSettings",
    extra: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`arq services.gateway.worker.<worker>` with the stack's settings (and `extra` ones)."""
    settings = stack.settings
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        "SEAVL_STORAGE_DIR": str(settings.storage.dir),
        "SEAVL_GATEWAY_EMBEDDER__URL": settings.embedder.url,
        "SEAVL_GATEWAY_FILTER__URL": settings.filter.url,
        "SEAVL_GATEWAY_DEDUP__URL": settings.dedup.url,
        "SEAVL_GATEWAY_PIPELINE__MAX_TRIES": str(settings.pipeline.max_tries),
        "SEAVL_GATEWAY_PIPELINE__JOB_TIMEOUT_SECONDS": str(settings.pipeline.job_timeout_seconds),
        **(extra or {}),
    }
    command = [sys.executable, "-m", "arq", f"services.gateway.worker.{worker}"]
    with log.open("ab") as output:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)


def test_an_in_process_job_past_its_time_limit_is_retried_then_recorded_as_failed(
    database_url: str, tmp_path: Path, live_embedder: str
) -> None:
    # One batch at a time: the next upload is processed only once the timed-out try's batch,
    # still running in its thread, has ended (and its late write was dropped).
    pipeline = PipelineSettings(
        max_tries=2, retry_delay_seconds=0, job_timeout_seconds=3, concurrent_batches=1
    )
    with (
        held_peer(5, live_embedder, "v1/embed") as embedder,
        running_stack(
            database_url, tmp_path, embedder.url, pipeline=pipeline, **JOBS_ASK_THE_EMBEDDER
        ) as stack,
    ):
        embedder.hold()
        image_id = stack.upload(photo_bytes("rocket.jpg")).json()["id"]
        failed = stack.wait_done(image_id, timeout=30)
        assert failed["status"] == "failed" and failed["attempts"] == 2
        assert failed["error"] == "gave up after 2 tries: timed out after 3 s"
        embedder.release()  # the first try's batch goes on, too late
        other = stack.upload(photo_bytes("coffee.png")).json()["id"]
        assert stack.wait_done(other, timeout=30)["status"] == "done"
        assert stack.image(image_id) == failed  # the record's end stands


def test_in_process_jobs_waiting_their_turn_do_not_run_out_of_time(
    tmp_path: Path, live_embedder: str
) -> None:
    """A backlog longer than the time limit: a try's time runs from its turn, as on arq."""
    pipeline = PipelineSettings(
        max_tries=1, job_timeout_seconds=4, batch_size=1, concurrent_batches=1
    )
    with (
        held_peer(60, live_embedder, "v1/embed") as embedder,
        running_stack(
            f"sqlite:///{tmp_path / 'seavl.db'}",
            tmp_path,
            embedder.url,
            pipeline=pipeline,
            **JOBS_ASK_THE_EMBEDDER,
        ) as stack,
    ):
        embedder.delay_seconds = 1  # one image at a time, a second or more each: 6 s in all
        uploads = [stack.upload(encode(noise_image((320, 240), seed))) for seed in range(6)]
        ended = [stack.wait_done(upload.json()["id"], timeout=60) for upload in uploads]
        assert [(image["status"], image["error"]) for image in ended] == [("done", None)] * 6


@pytest.mark.parametrize("queue", ["in-process", "arq"])
def test_a_caption_past_its_time_limit_is_recorded_as_failed(
    queue: str, postgres_url: str, redis_url: str, tmp_path: Path, live_embedder: str
) -> None:
    pipeline = PipelineSettings(max_tries=2, retry_delay_seconds=0, job_timeout_seconds=3)
    extra: dict[str, Any] = {"redis_url": redis_url} if queue == "arq" else {}
    with (
        held_peer(4) as captioner,  # the captioner hangs on every request
        running_stack(
            postgres_url,
            tmp_path,
            live_embedder,
            captioner=ServiceClientSettings(url=captioner.url, attempts=1),
            pipeline=pipeline,
            **extra,
        ) as stack,
    ):
        image_id = stack.upload(photo_bytes("coffee.png"), caption="true").json()["id"]
        if queue == "arq":
            run_worker_until_idle(stack)
            run_worker_until_idle(stack, WorkerKind.CAPTIONS)
        wait_for(lambda: stack.image(image_id)["captions"][0]["status"] != "queued", timeout=30)
        image = stack.image(image_id)
        [caption] = image["captions"]
        assert image["status"] == "done"  # the image's own record is untouched
        assert caption["status"] == "failed" and caption["attempts"] == 2
        assert caption["error"] == "gave up after 2 tries: timed out after 3 s"
        captioner.release()  # the stopped tries' threads end, as the gateway's stop waits for
