"""`seavl serve NAME` and `python -m services.NAME` start the same service from its `__main__`,
on the address its settings give, and refuse to listen beyond loopback unguarded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.common.settings import SERVICE_TOKEN_VARIABLE
from tests.e2e.conftest import ROOT, start, stop
from tests.helpers import free_port, migrated_sqlite

COMMANDS = {
    "seavl serve": ["-m", "services.cli", "serve", "filter"],
    "python -m": ["-m", "services.filter"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_both_commands_serve_the_filter_on_loopback(command: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": migrated_sqlite(tmp_path / "seavl.db"),
        "SEAVL_FILTER_SERVER__PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "filter.log"
    process = start(COMMANDS[command], env, log, url)
    try:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "seavl filter"
    finally:
        stop(process)
    assert f"Uvicorn running on {url}" in log.read_text()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unguarded_bind_beyond_loopback_is_refused_with_what_to_do(
    command: str, tmp_path: Path
) -> None:
    env = {
        **{name: value for name, value in os.environ.items() if name != SERVICE_TOKEN_VARIABLE},
        "DATABASE_URL": migrated_sqlite(tmp_path / "seavl.db"),
        "SEAVL_FILTER_SERVER__HOST": "192.0.2.10",  # TEST-NET: refused before any bind
        "SEAVL_FILTER_SERVER__PORT": str(free_port()),
    }
    refused = subprocess.run(
        [sys.executable, *COMMANDS[command]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "seavl serve filter: the filter would listen on 192.0.2.10 without a service token"
    ), refused.stderr
    assert SERVICE_TOKEN_VARIABLE in refused.stderr
    assert "Traceback" not in refused.stderr
