"""Start a seavl service as its own process on 127.0.0.1, as users run it, for a benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.database import DEFAULT_DATABASE_URL
from services.databases import OWNERS, upgrade_all
from tests.helpers import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PIDS: dict[str, int] = {}


@contextmanager
def running_service(name: str, env: dict[str, str], startup_timeout: float = 600) -> Iterator[str]:
    """`python -m services.<name>` with `env` added; yields its URL once /readyz answers 200
    (`PIDS[url]` is its process id, for CPU accounting). A service with tables gets its
    database migrated first, as `seavl db upgrade` does in a deployment."""
    port = free_port()
    prefix = f"SEAVL_{name.upper()}_"
    environment = {**os.environ, **env, f"{prefix}SERVER__PORT": str(port)}
    if name in OWNERS:
        database_url = environment.get(f"{prefix}DATABASE_URL") or environment.get("DATABASE_URL")
        upgrade_all(database_url or DEFAULT_DATABASE_URL, services=[name])
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, startup_timeout)
        PIDS[url] = process.pid
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
