"""The probe (`python -m services.common.worker_alive`, standard library only) and the worker (the
gateway's pydantic settings) must find the same heartbeat file, or every probe fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.common.worker_alive import HEARTBEAT_FILE_VARIABLE, QUEUES, heartbeat_path
from services.gateway.config import GatewaySettings


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither a developer's `.env` nor their variables decide these tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(HEARTBEAT_FILE_VARIABLE, raising=False)


def worker_path(queue: str) -> Path:
    """Where a worker of `queue` writes, as `services.gateway.worker` works it out."""
    return heartbeat_path(queue, GatewaySettings().worker.heartbeat_file)


@pytest.mark.parametrize("queue", QUEUES)
def test_the_defaults_agree_one_file_per_queue(queue: str) -> None:
    assert heartbeat_path(queue) == worker_path(queue)
    assert queue in heartbeat_path(queue).name
    assert len({heartbeat_path(q) for q in QUEUES}) == len(QUEUES)


@pytest.mark.parametrize("queue", QUEUES)
def test_the_variable_the_settings_read_is_the_one_the_probe_reads(
    queue: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(HEARTBEAT_FILE_VARIABLE, str(tmp_path / "pod" / "{queue}.alive"))
    assert heartbeat_path(queue) == worker_path(queue) == tmp_path / "pod" / f"{queue}.alive"
    monkeypatch.setenv(HEARTBEAT_FILE_VARIABLE, str(tmp_path / "fixed.alive"))
    assert heartbeat_path(queue) == worker_path(queue) == tmp_path / "fixed.alive"


def test_a_dotenv_line_counts_for_both_and_the_variable_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"# the worker's\nexport {HEARTBEAT_FILE_VARIABLE.lower()}='{tmp_path}/env-{{queue}}'\n"
    )
    assert heartbeat_path("crawls") == worker_path("crawls") == tmp_path / "env-crawls"
    monkeypatch.setenv(HEARTBEAT_FILE_VARIABLE, str(tmp_path / "variable"))
    assert heartbeat_path("crawls") == worker_path("crawls") == tmp_path / "variable"


def test_the_probe_imports_nothing_heavy() -> None:
    """What keeps it well under a probe's 1 s timeout: no pydantic, no gateway, no arq."""
    script = (
        "import sys, services.common.worker_alive; "
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'arq', 'redis', 'sqlalchemy', 'numpy') or m.startswith('services.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    # the (empty) package it lives in, and itself
    assert loaded == ["services.common", "services.common.worker_alive"]
