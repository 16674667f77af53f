"""The embedder as a real process on 127.0.0.1, started the way `make run` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningService:
    url: str
    process: subprocess.Popen[bytes]

    def peak_rss_bytes(self) -> int:
        """VmHWM: the most resident memory the process has had."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")


@pytest.fixture
def embedder_process(models_dir: Path, tmp_path: Path) -> Iterator[RunningService]:
    port = free_port()
    env = {
        **os.environ,
        "SEAVL_EMBEDDER_SERVER__PORT": str(port),
        "SEAVL_EMBEDDER_MODELS_DIR": str(models_dir),
        "SEAVL_EMBEDDER_STORAGE_DIR": str(tmp_path / "objects"),
    }
    log = (tmp_path / "embedder.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.embedder"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "embedder.log").read_text())
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the embedder did not become ready")
            time.sleep(0.2)
        yield RunningService(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def start(
    args: list[str], env: dict[str, str], log: Path, ready_url: str | None = None
) -> subprocess.Popen[bytes]:
    """A seavl process with `env` added to ours; waits for `ready_url`/readyz when given."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=output,
        )
    if ready_url is not None:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args} exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{ready_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args} not ready: {log.read_text()[-3000:]}")
            time.sleep(0.2)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
