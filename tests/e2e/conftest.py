"""The embedder as a real process on 127.0.0.1, started the way `make run` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port, wait_for, wait_until_ready

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
        "SEAVL_EMBEDDER_SERVER__PORT": str(port),
        "SEAVL_EMBEDDER_MODELS_DIR": str(models_dir),
        "SEAVL_STORAGE_DIR": str(tmp_path / "objects"),
    }
    url = f"http://127.0.0.1:{port}"
    process = start(["-m", "services.embedder"], env, tmp_path / "embedder.log", url)
    try:
        yield RunningService(url, process)
    finally:
        stop(process)


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
        try:
            wait_until_ready(ready_url, process, timeout=90)
        except (RuntimeError, TimeoutError) as exc:
            stop(process)
            raise RuntimeError(f"{args}: {exc}\n{log.read_text()[-3000:]}") from exc
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def upload_until_captioned(
    gateway_url: str, key: str, image: bytes, fields: dict[str, str]
) -> dict[str, Any]:
    """POST /v1/images asking for a caption; the record once the caption is no longer queued."""
    with httpx.Client(
        base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as gateway:
        upload = gateway.post("/v1/images", files={"image": ("photo.jpg", image)}, data=fields)
        assert upload.status_code == 202, upload.text
        path = f"/v1/images/{upload.json()['id']}"
        wait_for(lambda: gateway.get(path).json()["captions"][0]["status"] != "queued", 90, 0.5)
        return dict(gateway.get(path).json())
