"""`/docs` (Swagger UI) and `/redoc` work with no network: every service serves their scripts,
styles and icon itself instead of pointing the browser at a CDN."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.captioner.app import create_app as create_captioner
from services.captioner.config import CaptionerSettings
from services.common.clients import ServiceClientSettings
from services.common.storage import StorageSettings
from services.dedup.app import create_app as create_dedup
from services.dedup.config import DedupSettings
from services.embedder.app import create_app as create_embedder
from services.embedder.config import EmbedderSettings
from services.filter.app import create_app as create_filter
from services.filter.config import FilterSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.config import GatewaySettings
from tests.helpers import live_server, migrated_sqlite  # tables: as `seavl db upgrade`

AppFactory = Callable[[Path], FastAPI]
NOWHERE = ServiceClientSettings(url="http://127.0.0.1:9")

SERVICES: dict[str, AppFactory] = {
    "embedder": lambda folder: create_embedder(
        EmbedderSettings(
            models_dir=folder / "models", storage=StorageSettings(dir=folder / "objects")
        )
    ),
    "filter": lambda folder: create_filter(
        FilterSettings(database_url=migrated_sqlite(folder / "filter.db"), embedder=NOWHERE)
    ),
    "dedup": lambda folder: create_dedup(
        DedupSettings(
            database_url=migrated_sqlite(folder / "dedup.db"), qdrant_path=folder / "qdrant"
        )
    ),
    "captioner": lambda folder: create_captioner(
        CaptionerSettings(embedder=NOWHERE, storage=StorageSettings(dir=folder / "objects"))
    ),
    "gateway": lambda folder: create_gateway(
        GatewaySettings(
            database_url=migrated_sqlite(folder / "gateway.db"),
            storage=StorageSettings(dir=folder / "objects"),
        )
    ),
}
# Where a page points the browser: src and href attributes, and the script's `url: '…'`.
REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]*)"|url: '([^']*)'""")
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


def references(page: str) -> list[str]:
    return [first or second for first, second in REFERENCE.findall(page)]


async def check_page(app: FastAPI, page: str) -> None:
    """The page answers, and so does everything it points the browser at, from the app itself
    (called in process, without its lifespan: only the pages are asked)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        answered = await client.get(page)
        assert answered.status_code == 200
        assert answered.headers["content-type"].startswith("text/html")
        found = references(answered.text)
        assert any(url.endswith(".js") for url in found), answered.text
        for url in found:
            assert url.startswith("/") and not url.startswith("//"), f"{url} is not same-origin"
            asset = await client.get(url)
            assert asset.status_code == 200, url
            wanted = CONTENT_TYPES[Path(url).suffix]
            assert asset.headers["content-type"].startswith(wanted), (url, asset.headers)


@pytest.mark.parametrize("service", sorted(SERVICES))
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_what_the_service_serves(
    service: str, page: str, tmp_path: Path
) -> None:
    asyncio.run(check_page(SERVICES[service](tmp_path), page))


def headless_chromium_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, in a Chromium that can resolve no host name (so
    no CDN): only 127.0.0.1 is reachable."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "needs Chromium: apt-get install chromium"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    rendered = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert rendered.returncode == 0, rendered.stderr[-4000:]
    return rendered.stdout


def test_swagger_ui_and_redoc_render_the_operations_with_no_network(tmp_path: Path) -> None:
    app = SERVICES["filter"](tmp_path)
    paths = list(app.openapi()["paths"])
    with live_server(app) as url:
        swagger = headless_chromium_dom(f"{url}/docs", tmp_path / "chromium")
        redoc = headless_chromium_dom(f"{url}/redoc", tmp_path / "chromium")
    shown = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', swagger))
    assert shown == set(paths), swagger[-4000:]
    for path in paths:  # ReDoc shows each operation's path in its request samples' panel
        assert f">{path}</" in redoc.replace("\u200b", ""), (path, redoc[-4000:])
