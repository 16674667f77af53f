"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from moto.server import ThreadedMotoServer
from sqlalchemy import Engine, text
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


SERVER_POSTGRES_URL = os.environ.get(
    "SEAVL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Two test runs on one machine share the PostgreSQL server and Redis: each run works in a
# database of its own (named after its process, dropped at the end, or by the next run if killed).
RUN_DATABASE_PREFIX = "seavl_test_run_"
POSTGRES_URL = f"{SERVER_POSTGRES_URL.rsplit('/', 1)[0]}/{RUN_DATABASE_PREFIX}{os.getpid()}"


def _server_engine() -> Engine:
    """The test server's own database, in autocommit (CREATE / DROP DATABASE need it)."""
    return make_engine(SERVER_POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_run_database() -> None:
    """This run's database, created once; databases of runs whose process is gone are dropped."""
    engine = _server_engine()
    with engine.connect() as connection:
        names = connection.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
            {"prefix": f"{RUN_DATABASE_PREFIX}%"},
        ).scalars()
        ours = f"{RUN_DATABASE_PREFIX}{os.getpid()}"
        existing = set(names)
        for name in existing - {ours}:
            if not _process_alive(int(name.removeprefix(RUN_DATABASE_PREFIX))):
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if ours not in existing:
            connection.execute(text(f'CREATE DATABASE "{ours}"'))
    engine.dispose()


def _drop_run_database() -> None:
    engine = _server_engine()
    with engine.connect() as connection:
        name = f"{RUN_DATABASE_PREFIX}{os.getpid()}"
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


_run_database_created = False


def _reset_postgres(url: str) -> None:
    """Drops every seavl table in this run's database, so each test starts empty."""
    global _run_database_created
    if not _run_database_created:
        _create_run_database()
        _run_database_created = True
    engine = make_engine(url)
    with engine.begin() as connection:
        for table in reversed(SQLModel.metadata.sorted_tables):
            connection.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
    engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Gives back this run's PostgreSQL database and Redis database."""
    if _run_database_created:
        _drop_run_database()
    if _claimed_redis_database is not None:
        _release_redis_database(_claimed_redis_database)


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


SERVER_REDIS_URL = os.environ.get("SEAVL_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DATABASES = range(1, 16)
_claimed_redis_database: int | None = None


def _redis_claim_key(database: int) -> str:
    return f"seavl:test-run:redis-db:{database}"


def _claim_redis_database() -> int:
    """A Redis database (1-15) no other live test run holds; the claims live in database 0."""
    control = redis.Redis.from_url(f"{SERVER_REDIS_URL}/0")
    try:
        for database in REDIS_DATABASES:
            key = _redis_claim_key(database)
            holder = control.get(key)
            if holder is not None and _process_alive(int(holder)):
                continue
            if holder is not None:
                control.delete(key)
            if control.set(key, os.getpid(), nx=True, ex=24 * 3600):
                return database
    finally:
        control.close()
    raise RuntimeError("every Redis database 1-15 is held by a running test run")


def _release_redis_database(database: int) -> None:
    control = redis.Redis.from_url(f"{SERVER_REDIS_URL}/0")
    if control.get(_redis_claim_key(database)) == str(os.getpid()).encode():
        control.delete(_redis_claim_key(database))
    control.close()


@pytest.fixture
def redis_url() -> str:
    """The real Redis, in a database of this run's own, emptied first."""
    global _claimed_redis_database
    if _claimed_redis_database is None:
        _claimed_redis_database = _claim_redis_database()
    url = f"{SERVER_REDIS_URL}/{_claimed_redis_database}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-protocol server (moto) on 127.0.0.1, driven through the MinIO client."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()
