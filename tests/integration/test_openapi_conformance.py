"""Every service against its own OpenAPI, with schemathesis: no server error, no answer its
schema does not document, no schema-valid request refused (but for image content, see
tests/schemathesis.toml), no invalid one accepted.

Bounded (examples per operation in the config) and seeded, so that a run is reproducible; set
SEAVL_SCHEMATHESIS_SEED to another number to explore further.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.captioner.app import create_app as create_captioner
from services.captioner.config import CaptionerSettings
from services.common.clients import ServiceClientSettings
from services.dedup.app import create_app as create_dedup
from services.dedup.config import DedupSettings
from services.filter.app import create_app as create_filter
from services.filter.config import FilterSettings
from services.gateway.accounts import create_account
from services.gateway.auth import Role, create_key
from services.gateway.config import CrawlSettings
from tests.helpers import live_server, migrated_sqlite
from tests.integration.gateway_stack import running_stack

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "schemathesis.toml"
SEED = os.environ.get("SEAVL_SCHEMATHESIS_SEED", "20261122")


def schemathesis(url: str, *headers: str) -> str:
    """Runs `st run` on the service at `url`; returns its output, failing the test on any
    failure it reports."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        SEED,
        "--workers",
        "1",
        "--suppress-health-check",
        "too_slow",
        *[part for header in headers for part in ("--header", header)],
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    output = finished.stdout + finished.stderr
    summary = [line for line in output.splitlines() if "generated" in line]
    print(f"{url}: {summary[-1].strip() if summary else 'no summary'}")
    assert finished.returncode == 0, output[-20000:]
    return output


def test_embedder_conforms(live_embedder: str) -> None:
    schemathesis(live_embedder)


def test_filter_conforms(live_embedder: str, tmp_path: Path) -> None:
    settings = FilterSettings(
        database_url=migrated_sqlite(tmp_path / "filter.db"),
        embedder=ServiceClientSettings(url=live_embedder),
    )
    with live_server(create_filter(settings)) as url:
        schemathesis(url)


def test_dedup_conforms(tmp_path: Path) -> None:
    settings = DedupSettings(
        database_url=migrated_sqlite(tmp_path / "dedup.db"), qdrant_path=tmp_path / "qdrant"
    )
    with live_server(create_dedup(settings)) as url:
        schemathesis(url)


def test_captioner_conforms(live_embedder: str, tmp_path: Path) -> None:
    settings = CaptionerSettings(
        embedder=ServiceClientSettings(url=live_embedder),
    )
    with live_server(create_captioner(settings)) as url:
        schemathesis(url)


@pytest.fixture
def gateway(live_embedder: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    captioner_settings = CaptionerSettings(
        embedder=ServiceClientSettings(url=live_embedder),
    )
    with (
        live_server(create_captioner(captioner_settings)) as captioner,
        running_stack(
            f"sqlite:///{tmp_path / 'seavl.db'}",
            tmp_path,
            live_embedder,
            captioner=ServiceClientSettings(url=captioner),
            # crawls read and exports write only here, never in the checkout
            crawl=CrawlSettings(roots=[str(tmp_path / "crawls-and-exports")]),
        ) as stack,
    ):
        # an admin's key of an account, as people's calls come (reviews are given by people)
        account = create_account(
            stack.engine,
            name="Admin",
            email="admin@example.org",
            password="x" * 12,
            country="ID",
            role=Role.ADMIN,
        )
        key = create_key(stack.engine, Role.ADMIN, "conformance", account.id)
        yield str(stack.gateway.base_url).rstrip("/"), key


def test_gateway_conforms(gateway: tuple[str, str]) -> None:
    url, admin_key = gateway
    schemathesis(url, f"Authorization: Bearer {admin_key}")
