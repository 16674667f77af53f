"""Start a seavl service as its own process on 127.0.0.1, as users run it, for a benchmark."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from services.common.database import DEFAULT_DATABASE_URL
from services.databases import OWNERS, upgrade_all
from services.embedder.config import EmbedderSettings
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


@contextmanager
def running_embedder_alone(folder: Path) -> Iterator[str]:
    """An embedder of its own for a benchmark's "(a) embedder alone": the embedder keeps its
    recent outputs by the bytes' sha256, so the system's own embedder, having embedded a round's
    images for (a), would answer (b)'s calls for the same bytes from memory."""
    env = {
        "SEAVL_STORAGE_DIR": f"{folder}/objects-alone",
        "SEAVL_EMBEDDER_MODELS_DIR": str(EmbedderSettings().models_dir),
    }
    with running_service("embedder", env) as url:
        yield url


@contextmanager
def running_system(
    folder: Path, reference: bytes, extra: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """The embedder, the filter (a "default" set of one reference image), dedup and the gateway
    on embedded defaults under `folder` (with `extra` settings), each its own process; their
    URLs by name."""
    env = {
        "DATABASE_URL": f"sqlite:///{folder}/seavl.db",
        "SEAVL_DEDUP_QDRANT_PATH": f"{folder}/qdrant",
        "SEAVL_STORAGE_DIR": f"{folder}/objects",
        "SEAVL_EMBEDDER_MODELS_DIR": str(EmbedderSettings().models_dir),
        **(extra or {}),
    }
    with running_service("embedder", env) as embedder:
        env["SEAVL_FILTER_EMBEDDER__URL"] = env["SEAVL_GATEWAY_EMBEDDER__URL"] = embedder
        with (
            running_service("filter", env) as filter_url,
            running_service("dedup", env) as dedup,
        ):
            httpx.post(
                f"{filter_url}/v1/reference-sets",
                json={"name": "default", "model": "efficientnet-lite0"},
            ).raise_for_status()
            httpx.post(
                f"{filter_url}/v1/reference-sets/default/references",
                json={"references": [{"image": base64.b64encode(reference).decode()}]},
                timeout=60,
            ).raise_for_status()
            env["SEAVL_GATEWAY_FILTER__URL"] = filter_url
            env["SEAVL_GATEWAY_DEDUP__URL"] = dedup
            with running_service("gateway", env) as gateway:
                yield {
                    "embedder": embedder,
                    "filter": filter_url,
                    "dedup": dedup,
                    "gateway": gateway,
                }
