"""A gateway that stops leaves no database connection open behind it, even when a job's
thread is inside a query as it stops (such a connection, found later by the garbage collector,
is what psycopg warns about: `connection ... was deleted while still open`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from sqlmodel import Session

from services.common.database import make_engine
from services.gateway.app import create_app
from services.gateway.tables import ImageRow
from tests.conftest import migrated_postgres
from tests.helpers import free_port
from tests.integration.gateway_stack import settings_for

OTHER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
WAITING_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def _count(connection: psycopg.Connection[tuple[int]], query: str) -> int:
    row = connection.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_a_gateway_stopping_during_a_query_leaves_no_connection_open(tmp_path: Path) -> None:
    url = migrated_postgres()
    engine = make_engine(url)
    with Session(engine) as session:  # a record left queued, as a stopped gateway leaves one
        session.add(ImageRow(id="a" * 64, format="jpeg", size_bytes=1, width=1, height=1))
        session.commit()
    engine.dispose()
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(url, tmp_path, dead, dead, dead)
    with (
        psycopg.connect(url, autocommit=True) as watcher,
        psycopg.connect(url) as holder,
    ):
        before = _count(watcher, OTHER_CONNECTIONS) - 1  # the holder
        # the record's row held, so the job that starts with the gateway waits inside its claim
        holder.execute("SELECT id FROM gateway_images WHERE id = %s FOR UPDATE", ("a" * 64,))
        release = threading.Timer(1.0, holder.rollback)
        with TestClient(create_app(settings)):
            deadline = time.monotonic() + 30
            while _count(watcher, WAITING_ON_A_LOCK) == 0:
                assert time.monotonic() < deadline, "the job never reached its claim"
                time.sleep(0.05)
            release.start()  # while the gateway stops
        release.join()
        time.sleep(0.5)  # what the job's thread still had to do, done
        assert _count(watcher, OTHER_CONNECTIONS) - 1 <= before
