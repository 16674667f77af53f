"""Two dedup processes with an embedded store each, on one database, would each keep their own
copy of every near-duplicate (issue 9: 60 of 60 groups wrong): the second is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.dedup.app import create_app
from services.dedup.config import DedupSettings
from tests.helpers import free_port, live_server

ROOT = Path(__file__).resolve().parents[2]


def _second_process(database_url: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": database_url,
        "SEAVL_DEDUP_QDRANT_PATH": str(folder),
        "SEAVL_DEDUP_SERVER__PORT": str(free_port()),
    }
    return subprocess.run(
        [sys.executable, "-m", "services.dedup"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_second_embedded_store_on_the_same_database_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    settings = DedupSettings(database_url=database_url, qdrant_path=tmp_path / "first")
    with live_server(create_app(settings)):
        second = _second_process(database_url, tmp_path / "second")
        assert second.returncode != 0
        refusal = f"a second store in {tmp_path / 'second'} would keep its own copy of every"
        assert refusal in second.stderr, second.stderr[-2000:]
        assert "set QDRANT_URL to a Qdrant server they share" in second.stderr
        assert not (tmp_path / "second" / "vectors.sqlite").exists()  # it opened nothing
    # once the first has stopped, the database is free again
    with live_server(create_app(settings.model_copy(update={"qdrant_path": tmp_path / "second"}))):
        pass
