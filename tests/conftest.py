"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from moto.server import ThreadedMotoServer
from sqlalchemy import Connection, Engine, inspect, text

from services.common.database import make_engine
from services.databases import upgrade_all
from services.embedder.app import create_app as create_embedder_app
from services.embedder.config import EmbedderSettings
from services.embedder.prepare import (
    prepare_blazeface,
    prepare_default_model,
    prepare_face_model,
    prepare_unsafe_model,
)
from tests.helpers import free_port, live_server

PACKAGES = Path(__file__).resolve().parents[1] / "var" / "packages"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the real default model, converted by the project's own code."""
    folder = tmp_path_factory.mktemp("models")
    prepare_default_model(folder)
    prepare_face_model(folder)
    prepare_blazeface(folder, downloads=PACKAGES)  # the mediapipe wheel kept in var/packages
    # the opt-in unsafe-content model too, so its use is tested (its wheel kept in var/packages)
    prepare_unsafe_model(folder, downloads=PACKAGES)
    return folder


# Images move between services by key, so every service of a test run reads one store, as a
# deployment's do (`SEAVL_STORAGE_…`): a folder of this run's, given to every process it starts.
RUN_OBJECTS = Path(tempfile.mkdtemp(prefix="seavl-test-objects-"))
os.environ["SEAVL_STORAGE_DIR"] = str(RUN_OBJECTS)


@pytest.fixture
def embedder_settings(models_dir: Path, tmp_path: Path) -> Callable[..., EmbedderSettings]:
    """Settings for an embedder on the real default model (reading the run's store); keyword
    arguments override fields."""

    def make(**overrides: Any) -> EmbedderSettings:
        return EmbedderSettings(**{"models_dir": models_dir, **overrides})

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
_run_database_migrated = False


def _run_database() -> str:
    """This run's PostgreSQL database, created on first use."""
    global _run_database_created
    if not _run_database_created:
        _create_run_database()
        _run_database_created = True
    return POSTGRES_URL


def _service_tables(connection: Connection) -> list[str]:
    return [
        name
        for name in inspect(connection).get_table_names()
        if name.startswith(("gateway_", "filter_", "dedup_", "alembic_version_"))
    ]


def _empty_postgres() -> str:
    """This run's database with no seavl table at all, migrated or not."""
    global _run_database_migrated
    engine = make_engine(_run_database())
    with engine.begin() as connection:
        for name in _service_tables(connection):
            connection.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    engine.dispose()
    _run_database_migrated = False
    return POSTGRES_URL


def migrated_postgres() -> str:
    """This run's database migrated to head (once per run) with every table emptied, so each
    test starts from nothing without paying for the migrations again."""
    global _run_database_migrated
    if not _run_database_migrated:
        upgrade_all(_empty_postgres())
        _run_database_migrated = True
        return POSTGRES_URL
    engine = make_engine(POSTGRES_URL)
    with engine.begin() as connection:
        names = [n for n in _service_tables(connection) if not n.startswith("alembic_version_")]
        quoted = ", ".join(f'"{name}"' for name in names)
        connection.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at head, copied for each test that wants one."""
    path = tmp_path_factory.mktemp("migrated") / "seavl.db"
    upgrade_all(f"sqlite:///{path}")
    return path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Gives back this run's PostgreSQL database, Redis database and object folder."""
    shutil.rmtree(RUN_OBJECTS, ignore_errors=True)
    if _run_database_created:
        _drop_run_database()
    if _claimed_redis_database is not None:
        _release_redis_database(_claimed_redis_database)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, _migrated_sqlite: Path) -> str:
    """The same test on the embedded default (SQLite) and on the real PostgreSQL server, with
    every service's tables migrated (as `seavl db upgrade` leaves them) and empty."""
    if request.param == "sqlite":
        path = tmp_path / "seavl.db"
        shutil.copyfile(_migrated_sqlite, path)
        return f"sqlite:///{path}"
    return migrated_postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no seavl table: what a fresh install starts from."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'seavl.db'}"
    return _empty_postgres()


@pytest.fixture(scope="session")
def live_embedder(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real embedder with the real default model, over HTTP on 127.0.0.1."""
    settings = EmbedderSettings(models_dir=models_dir)
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
