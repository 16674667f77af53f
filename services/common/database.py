"""SQL through SQLModel: PostgreSQL when a URL says so, a SQLite file by default.

Services use sync sessions from sync routes (FastAPI runs those in its thread pool), which keeps
transactions and row locks plain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, Field
from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, SQLModel, create_engine

from services.common.errors import UnavailableError

DEFAULT_DATABASE_URL = "sqlite:///var/seavl.db"


def utcnow() -> datetime:
    """Timestamps of records: aware, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A timestamp read back from a record, aware: SQLite gives them back without their zone
    (they were written in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def database_url_setting(service: str) -> Any:
    """A service's `database_url` setting: `SEAVL_<SERVICE>_DATABASE_URL`, else the shared
    `DATABASE_URL`, else the embedded SQLite file."""
    return Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices(f"SEAVL_{service.upper()}_DATABASE_URL", "DATABASE_URL"),
    )


def schema_wait_setting() -> Any:
    """How long a process waits at start-up for `seavl db upgrade` to bring its tables to the
    revision its code needs (a compose one-shot or a k8s Job may still be running it)."""
    return Field(
        default=300.0,
        ge=0,
        description="seconds to wait at start-up for the database schema to be migrated",
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    # With WAL, NORMAL syncs at checkpoints: a crash loses no committed data, a power cut at
    # most the last transactions; FULL would fsync on every commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy alone would look for psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def insert_if_new(engine: Engine | Connection, table: type[SQLModel]) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING` into `table`, for `connection.execute(statement, row)`:
    one round trip where a lookup and an ORM flush would take two and more CPU. Add
    `.returning(…)` to learn whether the row was new (the drivers' rowcounts disagree)."""
    insert = postgres_insert if is_postgres(engine) else sqlite_insert
    return insert(table).on_conflict_do_nothing()


def sqlite_file(engine: Engine) -> str | None:
    """The path of the engine's SQLite file; None for another database or one in memory."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return database


class DatabasePool(BaseModel):
    """A process's PostgreSQL connections: `size` kept open at most, `overflow` more under load.

    Every replica of every service has its pool, and PostgreSQL allows 100 connections by
    default: deploy/k8s sets each Deployment's so that their maximum adds up to fewer (README:
    Deployment). SQLite has no pool."""

    size: int = Field(default=5, ge=1, le=100)
    overflow: int = Field(default=5, ge=0, le=100)

    @property
    def connections(self) -> int:
        return self.size + self.overflow


def database_pool_setting() -> Any:
    """A service's `database_pool` setting: `SEAVL_<SERVICE>_DATABASE_POOL__SIZE`, `…__OVERFLOW`."""
    return Field(default_factory=DatabasePool, description="its PostgreSQL connections at most")


def make_engine(
    url: str, connect_timeout_seconds: float = 5.0, pool: DatabasePool | None = None
) -> Engine:
    """An engine (the tables are made by migrations: services/common/migrations.py)."""
    pool = pool or DatabasePool()
    url = normalise_url(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool.size,
            max_overflow=pool.overflow,
            connect_args={"connect_timeout": max(1, int(connect_timeout_seconds))},
        )
    return engine


def database_reachable(engine: Engine) -> bool:
    """For /readyz: can a connection run a trivial query right now?"""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise UnavailableError(f"the database cannot be reached: {exc.orig}") from exc
        except BaseException:
            session.rollback()
            raise
