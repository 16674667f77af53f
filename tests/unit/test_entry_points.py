"""Each service starts from its own `__main__` and imports only itself and `common`; the `seavl`
command imports a service only when it runs one (issue 10: `python -m services.dedup` went
through the CLI, which imported the uploader and knew every service)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("embedder", "filter", "dedup", "captioner", "gateway")
WEB_STACK = ("uvicorn", "alembic", "onnxruntime")  # fastapi comes with common.errors


def imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement`."""
    probe = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def packages(modules: set[str]) -> set[str]:
    """`services.<package>` of every seavl module in `modules`."""
    return {".".join(name.split(".")[:2]) for name in modules if name.startswith("services.")}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_entry_imports_only_that_service_and_common(service: str) -> None:
    modules = imported_after(f"import services.{service}.__main__")
    assert packages(modules) == {f"services.{service}", "services.common"}
    assert "uvicorn" in modules  # it serves with uvicorn itself, not through the CLI


def test_the_seavl_command_imports_no_service_until_it_runs_one() -> None:
    modules = imported_after("import services.cli")
    assert packages(modules) <= {
        "services.cli",
        "services.common",
        "services.uploader",
        "services.crawl_client",
    }
    assert not modules & set(WEB_STACK)
