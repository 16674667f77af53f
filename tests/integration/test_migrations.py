"""Schema changes are migrations: `seavl db upgrade` makes the tables once, processes never do."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from services.common.database import make_engine
from services.common.migrations import (
    Schema,
    SchemaError,
    current_revision,
    downgrade,
    upgrade,
    wait_for_schema,
)
from services.databases import owned_schemas, upgrade_all
from services.gateway.app import create_app as create_gateway
from services.gateway.tables import GATEWAY_SCHEMA
from tests.helpers import free_port, live_server
from tests.integration.gateway_stack import settings_for

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = [owned.schema for owned in owned_schemas()]


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _differences(url: str, schema: Schema) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_name": schema.owns,
                    "include_object": schema.owns_object,
                    "compare_type": True,
                },
            )
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def test_the_migrations_make_exactly_the_tables_the_models_describe(
    empty_database_url: str,
) -> None:
    """A model changed without a revision fails here (on SQLite and on PostgreSQL)."""
    upgrade_all(empty_database_url)
    for schema in SCHEMAS:
        assert _differences(empty_database_url, schema) == [], schema.service
        engine = make_engine(empty_database_url)
        assert current_revision(schema, engine) == schema.head
        engine.dispose()


def test_upgrading_twice_changes_nothing_and_downgrading_removes_only_that_services_tables(
    empty_database_url: str,
) -> None:
    upgrade_all(empty_database_url)
    before = _tables(empty_database_url)
    upgrade_all(empty_database_url)
    assert _tables(empty_database_url) == before
    engine = make_engine(empty_database_url)
    assert downgrade(GATEWAY_SCHEMA, engine, "base") == "base"
    engine.dispose()
    left = _tables(empty_database_url)
    assert not {name for name in left if name.startswith("gateway_")}
    assert {name for name in before if name.startswith(("filter_", "dedup_"))} <= left
    upgrade_all(empty_database_url, services=["gateway"])
    assert _tables(empty_database_url) == before


def test_concurrent_upgrades_on_a_fresh_database_all_succeed(empty_database_url: str) -> None:
    """Several processes at once (a compose one-shot and an operator, say): one migrates, the
    others wait on the lock and find nothing left to do; no `DuplicateTable`."""
    env = {"DATABASE_URL": empty_database_url, "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert f"gateway: at {GATEWAY_SCHEMA.head}" in out
    for schema in SCHEMAS:
        assert _differences(empty_database_url, schema) == []


def test_a_database_made_before_migrations_is_adopted_and_keeps_its_rows(
    empty_database_url: str,
) -> None:
    """`create_all` made the tables before there were migrations, without the caption's language
    confidence (nor anything added since); the upgrade stamps the baseline, adds the rest, and
    loses no row."""
    engine = make_engine(empty_database_url)
    # the tables as the code of the baseline's time made them: the baseline's, unversioned
    upgrade(GATEWAY_SCHEMA, engine, GATEWAY_SCHEMA.baseline)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {GATEWAY_SCHEMA.version_table}"))
        connection.execute(
            text(
                "INSERT INTO gateway_captions (image_id, language, status, requests, attempts, "
                "created_at, updated_at) VALUES ('abc', 'th', 'done', 1, 0, :now, :now)"
            ),
            {"now": "2026-11-01 00:00:00+00:00"},
        )
    assert upgrade(GATEWAY_SCHEMA, engine) == GATEWAY_SCHEMA.head
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT image_id, language_confidence FROM gateway_captions")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("abc", None)]
    assert _differences(empty_database_url, GATEWAY_SCHEMA) == []


def test_a_database_with_only_some_of_a_services_tables_is_left_alone(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE gateway_images (id VARCHAR(64) PRIMARY KEY)"))
    with pytest.raises(SchemaError, match="not made by seavl"):
        upgrade(GATEWAY_SCHEMA, engine)
    engine.dispose()
    assert _tables(empty_database_url) & {"gateway_captions", "alembic_version_gateway"} == set()


def test_a_database_migrated_by_a_newer_seavl_is_refused_with_what_to_do(
    empty_database_url: str,
) -> None:
    upgrade_all(empty_database_url)
    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version_gateway SET version_num = 'gateway_9999'"))
    for attempt in (lambda: upgrade(GATEWAY_SCHEMA, engine),) + (
        lambda: wait_for_schema(GATEWAY_SCHEMA, engine, wait_seconds=30),
    ):
        started = time.monotonic()
        with pytest.raises(SchemaError, match="gateway_9999.*newer seavl"):
            attempt()
        assert time.monotonic() - started < 5  # no point waiting for it
    engine.dispose()


def test_a_service_never_makes_tables_it_waits_for_the_upgrade(
    empty_database_url: str, tmp_path: Path
) -> None:
    """The race of issue 9: a worker and the gateway starting on a fresh database each created
    the tables and one died on `DuplicateTable`. Now they wait for `seavl db upgrade`."""
    settings = settings_for(
        empty_database_url, tmp_path, "http://a", "http://b", "http://c"
    ).model_copy(update={"schema_wait_seconds": 60.0})
    started = threading.Event()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            with live_server(create_gateway(settings), startup_timeout=90) as url:
                started.set()
                assert httpx.get(f"{url}/readyz").status_code == 200
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)
            started.set()

    thread = threading.Thread(target=serve)
    thread.start()
    time.sleep(2)
    assert not started.is_set()  # still waiting for the schema
    assert not {name for name in _tables(empty_database_url) if name.startswith("gateway_")}
    upgrade_all(empty_database_url)
    assert started.wait(30)
    thread.join(30)
    assert failures == []


def test_a_service_that_waited_long_enough_stops_saying_what_to_run(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": database,
        "SEAVL_FILTER_SCHEMA_WAIT_SECONDS": "0.5",
        "SEAVL_FILTER_SERVER__PORT": str(free_port()),
    }
    served = subprocess.run(
        [sys.executable, "-m", "services.filter"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode != 0
    assert "the filter tables are at revision none" in served.stderr
    assert "run `seavl db upgrade` (waited 0.5 s)" in served.stderr
    assert not {name for name in _tables(database) if name.startswith("filter_")}


def test_keys_create_on_a_database_never_upgraded_says_what_to_run(tmp_path: Path) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "create", "--role", "admin"],
        cwd=ROOT,
        env={"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 1
    assert "seavl keys create: the gateway tables are at revision none" in created.stderr
    assert "seavl db upgrade" in created.stderr
