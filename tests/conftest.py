"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from moto.server import ThreadedMotoServer
from sqlalchemy import text
from sqlmodel import SQLModel

import services.dedup.tables  # noqa: F401  (registers the tables the reset drops)
import services.filter.tables  # noqa: F401
import services.gateway.tables  # noqa: F401
from services.common.database import make_engine
from services.embedder.app import create_app as create_embedder_app
from services.embedder.config import EmbedderSettings
from services.embedder.prepare import prepare_default_model
from tests.helpers import free_port, live_server


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the real default model, converted by the project's own code."""
    folder = tmp_path_factory.mktemp("models")
    prepare_default_model(folder)
    return folder


@pytest.fixture
def embedder_settings(models_dir: Path, tmp_path: Path) -> Callable[..., EmbedderSettings]:
    """Settings for an embedder on the real default model; keyword arguments override fields."""

    def make(**overrides: Any) -> EmbedderSettings:
        fields: dict[str, Any] = {"models_dir": models_dir, "storage_dir": tmp_path / "objects"}
        fields.update(overrides)
        return EmbedderSettings(**fields)

    return make


POSTGRES_URL = os.environ.get(
    "SEAVL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _reset_postgres(url: str) -> None:
    """Drops every seavl table in the test database, so each test starts empty."""
    engine = make_engine(url)
    with engine.begin() as connection:
        for table in reversed(SQLModel.metadata.sorted_tables):
            connection.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded default (SQLite) and on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'seavl.db'}"
    _reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def live_embedder(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real embedder with the real default model, over HTTP on 127.0.0.1."""
    settings = EmbedderSettings(
        models_dir=models_dir, storage_dir=tmp_path_factory.mktemp("objects")
    )
    with live_server(create_embedder_app(settings)) as url:
        yield url


REDIS_URL = os.environ.get("SEAVL_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")


@pytest.fixture
def redis_url() -> str:
    """The real Redis, in a database of the tests' own, emptied first."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-protocol server (moto) on 127.0.0.1, driven through the MinIO client."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()
