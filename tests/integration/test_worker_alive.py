"""The per-pod worker check (`python -m services.common.worker_alive`) against real workers on
the real Redis: a live worker passes, a stuck one fails while a healthy worker of the same
queue runs beside it (arq's shared health key would say all is well), and the check is quick
enough for a probe's timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from arq import func
from arq.connections import RedisSettings, create_pool
from arq.constants import default_queue_name
from arq.worker import Worker, async_check_health

from services.common.worker_alive import HEARTBEAT_FILE_VARIABLE
from services.gateway.config import GatewaySettings, WorkerProcessSettings
from services.gateway.worker import WorkerKind, worker_options
from tests.e2e.conftest import ROOT, stop
from tests.helpers import migrated_sqlite, wait_for

BEAT_SECONDS = 0.5
MAX_AGE_SECONDS = 2.0
PROBE_BUDGET_SECONDS = 0.5  # a probe's timeout is 1 s; arq's check takes seconds


@dataclass
class Check:
    returncode: int
    stderr: str
    seconds: float


def check(*args: str, heartbeat_file: str | None = None, queue: str = "images") -> Check:
    """The probe's command, as a pod runs it (with the pod's heartbeat variable when given)."""
    env = {k: v for k, v in os.environ.items() if k.upper() != HEARTBEAT_FILE_VARIABLE}
    if heartbeat_file is not None:
        env[HEARTBEAT_FILE_VARIABLE] = heartbeat_file
    command = [sys.executable, "-m", "services.common.worker_alive", "--queue", queue, *args]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=10)
    return Check(done.returncode, done.stderr.strip(), time.monotonic() - started)


def fresh(heartbeat_file: str) -> Check:
    return check("--max-age", str(MAX_AGE_SECONDS), heartbeat_file=heartbeat_file)


def arq_says_healthy(redis_url: str) -> bool:
    """arq's own check (what `seavl worker --check` runs): one key for the whole queue."""
    redis = RedisSettings.from_dsn(redis_url)
    return asyncio.run(async_check_health(redis, queue_name=default_queue_name)) == 0


@pytest.fixture
def database(tmp_path: Path) -> str:
    return migrated_sqlite(tmp_path / "seavl.db")


@contextlib.contextmanager
def worker_process(
    database: str, redis_url: str, heartbeat_file: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`seavl worker` (the image queue), as a pod runs it; stopped (and woken first) at the
    end."""
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        HEARTBEAT_FILE_VARIABLE: heartbeat_file,
        "SEAVL_GATEWAY_WORKER__HEARTBEAT_SECONDS": str(BEAT_SECONDS),
    }
    command = [sys.executable, "-m", "services.cli", "worker"]
    with log.open("ab") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        stop(process)


def wait_alive(heartbeat_file: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def alive() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode}:\n{log.read_text()}")
        return fresh(heartbeat_file).returncode == 0

    wait_for(alive, timeout=60, interval=0.2)


@pytest.mark.timeout(120)
def test_each_pod_is_judged_by_its_own_heartbeat(
    database: str, redis_url: str, tmp_path: Path
) -> None:
    """Two workers of the image queue in two "pods": one freezes (its loop runs no more), the
    other goes on. arq's check still passes; the frozen pod's own check fails, and says why."""
    pods = {name: str(tmp_path / name / "seavl-{queue}.alive") for name in ("a", "b")}
    log = tmp_path / "workers.log"
    with (
        worker_process(database, redis_url, pods["a"], log) as healthy,
        worker_process(database, redis_url, pods["b"], log) as frozen,
    ):
        wait_alive(pods["a"], healthy, log)
        wait_alive(pods["b"], frozen, log)
        assert (tmp_path / "b" / "seavl-images.alive").is_file()  # {queue}: the worker's kind
        for pod in pods.values():
            passed = fresh(pod)
            assert passed.returncode == 0 and passed.stderr == ""
            assert passed.seconds < PROBE_BUDGET_SECONDS, passed

        os.kill(frozen.pid, signal.SIGSTOP)
        wait_for(lambda: fresh(pods["b"]).returncode == 1, timeout=MAX_AGE_SECONDS + 5)
        stuck = fresh(pods["b"])
        assert stuck.stderr.startswith("last heartbeat ")
        assert stuck.stderr.endswith("(limit 2 s): the worker's loop is stuck")
        assert len(stuck.stderr.splitlines()) == 1 and stuck.seconds < PROBE_BUDGET_SECONDS
        assert fresh(pods["a"]).returncode == 0  # judged apart: the frozen one does not drag it
        assert arq_says_healthy(redis_url)  # the shared key: the healthy pod hides the frozen one

        os.kill(frozen.pid, signal.SIGCONT)
        wait_for(lambda: fresh(pods["b"]).returncode == 0, timeout=10)  # it beats again
        stop(frozen)  # a worker stopped cleanly leaves no heartbeat behind
        gone = fresh(pods["b"])
        assert gone.returncode == 1 and "no heartbeat at " in gone.stderr
        assert fresh(pods["a"]).returncode == 0


async def block(ctx: dict[str, Any], seconds: float) -> str:
    """A job that holds its worker's event loop (as a blocking call in a coroutine would)."""
    time.sleep(seconds)
    return "blocked"


@contextlib.contextmanager
def worker_in_thread(settings: GatewaySettings) -> Iterator[None]:
    """A worker of the image queue on its own loop and thread, that can also run `block`;
    stopped as arq stops one (its main task cancelled), with its shutdown."""
    options = worker_options(settings, WorkerKind.IMAGES)
    options["functions"] = [*options["functions"], func(block, name="block")]
    started = threading.Event()
    running: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            worker = Worker(**options, handle_signals=False)
            running["loop"], running["worker"] = asyncio.get_running_loop(), worker
            started.set()
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.async_run()
            finally:
                await worker.close()

        try:
            asyncio.run(main())
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(timeout=30)
    try:
        yield
    finally:
        if "loop" in running:

            def cancel() -> None:
                task = running["worker"].main_task
                if task is not None:
                    task.cancel()

            with contextlib.suppress(RuntimeError):  # its loop already closed
                running["loop"].call_soon_threadsafe(cancel)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop"


def enqueue_block(redis_url: str, seconds: float) -> None:
    async def send() -> None:
        pool = await create_pool(RedisSettings.from_dsn(redis_url))
        try:
            await pool.enqueue_job("block", seconds)
        finally:
            await pool.aclose()

    asyncio.run(send())


@pytest.mark.timeout(120)
def test_a_blocked_event_loop_stops_the_heartbeat(
    database: str, redis_url: str, tmp_path: Path
) -> None:
    """The process lives on, but its loop is held by a job: no heartbeat, so the probe fails;
    once the loop is free again, the worker is alive again."""
    heartbeat_file = str(tmp_path / "pod" / "{queue}.alive")
    worker = WorkerProcessSettings(heartbeat_file=heartbeat_file, heartbeat_seconds=BEAT_SECONDS)
    settings = GatewaySettings(database_url=database, redis_url=redis_url, worker=worker)
    with worker_in_thread(settings):
        wait_for(lambda: fresh(heartbeat_file).returncode == 0, timeout=60, interval=0.2)
        enqueue_block(redis_url, MAX_AGE_SECONDS + 3)
        wait_for(lambda: fresh(heartbeat_file).returncode == 1, timeout=MAX_AGE_SECONDS + 5)
        stuck = fresh(heartbeat_file)
        assert "the worker's loop is stuck" in stuck.stderr, stuck
        assert stuck.seconds < PROBE_BUDGET_SECONDS, stuck
        wait_for(lambda: fresh(heartbeat_file).returncode == 0, timeout=10)  # the job ended
    assert not (tmp_path / "pod" / "images.alive").exists()  # its shutdown took it away


@pytest.mark.timeout(30)
def test_no_heartbeat_file_fails_and_says_where_it_looked(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "images.alive"
    by_flag = check("--file", str(missing))
    assert by_flag.returncode == 1
    assert by_flag.stderr == (
        f"no heartbeat at {missing}: the worker has not started or wrote elsewhere"
    )
    assert by_flag.seconds < PROBE_BUDGET_SECONDS, by_flag
    by_variable = check(heartbeat_file=str(tmp_path / "{queue}.alive"), queue="exports")
    assert by_variable.returncode == 1
    assert f"no heartbeat at {tmp_path / 'exports.alive'}:" in by_variable.stderr
