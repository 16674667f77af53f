"""Schema changes as Alembic migrations: one history per service that owns tables.

Tables used to be created by every process at start-up (`create_all`), so a worker and the gateway
starting on a fresh PostgreSQL raced into `DuplicateTable`, and a new column never reached an
existing database. Now `seavl db upgrade` applies each service's revisions once, under a lock, and
a process only waits at start-up until its schema is at the revision its code was written for.

Each service keeps its revisions in `services/<service>/migrations` and its own version table
(`alembic_version_<service>`), and touches only tables named `<service>_…`, so the services can
share one database or each have their own.
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from services.common.database import is_postgres, make_engine, sqlite_file

logger = logging.getLogger(__name__)

ENVIRONMENT = Path(__file__).with_name("migration_env")
# One advisory lock for every seavl migration on a PostgreSQL server ("seavl" in ASCII).
POSTGRES_LOCK_KEY = 0x736561766C
UPGRADE_COMMAND = "seavl db upgrade"


class _OnlyWhatChanged(logging.Filter):
    """Alembic tells at INFO which dialect it uses each time it looks at a database, which
    every start-up does; only the revisions it applies are worth a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_OnlyWhatChanged())


class SchemaError(RuntimeError):
    """The database's schema is not one this code can use (yet)."""


@dataclass(frozen=True)
class Schema:
    """The tables one service owns and where their revisions live.

    `baseline` is the revision that equals what `create_all` made before migrations existed, and
    `baseline_tables` its tables: a database that has them but no version table is adopted at
    the baseline (and then upgraded) instead of failing on tables that already exist.
    """

    service: str
    versions: Path
    baseline: str
    baseline_tables: tuple[str, ...]

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.service}"

    @property
    def table_prefix(self) -> str:
        return f"{self.service}_"

    def owns(self, name: str | None, kind: str, *_: Any) -> bool:
        """Alembic's `include_name` (what it reflects) and `include_object` (what the models
        hold): another service's tables, and the version tables, are not this schema's."""
        if kind != "table":
            return True
        return name is not None and name.startswith(self.table_prefix)

    def owns_object(self, item: Any, name: str | None, kind: str, *_: Any) -> bool:
        table = getattr(item, "table", item) if kind != "table" else item
        return self.owns(getattr(table, "name", name), "table")

    def config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(ENVIRONMENT))
        config.set_main_option("version_locations", str(self.versions))
        config.set_main_option("path_separator", "os")
        config.attributes["schema"] = self
        config.attributes["connection"] = connection
        return config

    @cached_property
    def scripts(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config())

    @property
    def head(self) -> str:
        head = self.scripts.get_current_head()
        assert head is not None, f"{self.versions} holds no revision"
        return head

    def knows(self, revision: str) -> bool:
        try:
            self.scripts.get_revision(revision)
        except CommandError:
            return False
        return True


def _render_item(kind: str, item: Any, _: AutogenContext) -> str | Literal[False]:
    """SQLModel's types written as the plain SQLAlchemy they store, so that a revision imports
    nothing but SQLAlchemy and Alembic."""
    if kind == "type" and isinstance(item, AutoString):
        return f"sa.String(length={item.length})" if item.length else "sa.String()"
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def environment_options(config: Config) -> dict[str, Any]:
    """What `migration_env/env.py` gives `context.configure`."""
    schema: Schema = config.attributes["schema"]
    connection: Connection = config.attributes["connection"]
    return {
        "connection": connection,
        "target_metadata": SQLModel.metadata,
        "version_table": schema.version_table,
        "include_name": schema.owns,
        "include_object": schema.owns_object,
        "compare_type": True,
        "render_item": _render_item,
        # SQLite alters a table by copying it; Alembic's batch mode does that for us.
        "render_as_batch": connection.dialect.name == "sqlite",
    }


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other seavl migration runs beside."""
    database = sqlite_file(engine)
    if database is not None:
        with open(f"{database}.migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with engine.begin() as connection:
                yield connection
        return
    with engine.begin() as connection:
        if is_postgres(engine):
            # held until this transaction ends; PostgreSQL's DDL is transactional
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY}
            )
        yield connection


def _current(connection: Connection, schema: Schema) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": schema.version_table})
    return context.get_current_revision()


def _adopt_if_created_before_migrations(connection: Connection, schema: Schema) -> None:
    tables = {name for name in inspect(connection).get_table_names() if schema.owns(name, "table")}
    if not tables:
        return
    missing = sorted(set(schema.baseline_tables) - tables)
    if missing:
        raise SchemaError(
            f"the database has {schema.service} tables ({', '.join(sorted(tables))}) but not "
            f"{', '.join(missing)} and no {schema.version_table} table: it was not made by seavl, "
            "so it is left as it is"
        )
    logger.info("adopting %s tables made before migrations at %s", schema.service, schema.baseline)
    command.stamp(schema.config(connection), schema.baseline)


def upgrade(schema: Schema, engine: Engine, revision: str = "head") -> str:
    """Applies `schema`'s revisions up to `revision` (safe to run from several places at once)."""
    with _migration_lock(engine) as connection:
        current = _current(connection, schema)
        if current is None:
            _adopt_if_created_before_migrations(connection, schema)
        elif not schema.knows(current):
            raise _ahead(schema, current)
        command.upgrade(schema.config(connection), revision)
        return _current(connection, schema) or "base"


def downgrade(schema: Schema, engine: Engine, revision: str) -> str:
    """Reverts `schema` to `revision` (`base`: none of its tables)."""
    with _migration_lock(engine) as connection:
        command.downgrade(schema.config(connection), revision)
        return _current(connection, schema) or "base"


def current_revision(schema: Schema, engine: Engine) -> str | None:
    with engine.connect() as connection:
        return _current(connection, schema)


def _ahead(schema: Schema, current: str) -> SchemaError:
    return SchemaError(
        f"the {schema.service} tables are at revision {current}, which this version of seavl "
        f"does not know (its newest is {schema.head}): a newer seavl migrated them; run that "
        "version, or downgrade the database with it first"
    )


def wait_for_schema(
    schema: Schema, engine: Engine, wait_seconds: float, poll_seconds: float = 1.0
) -> None:
    """Returns once `schema` is at head; waits up to `wait_seconds` for `seavl db upgrade` (a
    compose one-shot or a k8s Job may be running it), then raises `SchemaError` saying what to do.

    Never creates or changes a table: that is the migration's job, done once.
    """
    deadline = time.monotonic() + wait_seconds
    waiting = False
    while True:
        try:
            current = current_revision(schema, engine)
        except SQLAlchemyError as exc:
            problem = f"the {schema.service} database cannot be reached ({exc.__class__.__name__})"
        else:
            if current == schema.head:
                if waiting:
                    logger.info("the %s tables are at %s now", schema.service, current)
                return
            if current is not None and not schema.knows(current):
                raise _ahead(schema, current)
            problem = (
                f"the {schema.service} tables are at revision {current or 'none'} and this "
                f"version needs {schema.head}: run `{UPGRADE_COMMAND}`"
            )
        if time.monotonic() >= deadline:
            raise SchemaError(f"{problem} (waited {wait_seconds:g} s)")
        if not waiting:
            logger.warning("waiting up to %g s: %s", wait_seconds, problem)
            waiting = True
        time.sleep(poll_seconds)


def new_revision(schema: Schema, message: str, revision_id: str) -> Path:
    """Writes a revision of what the models changed since head, compared on an empty SQLite
    database brought to head (so no developer database is needed); review it before committing."""
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/head.db")
        try:
            upgrade(schema, engine)
            with engine.begin() as connection:
                script = command.revision(
                    schema.config(connection),
                    message=message,
                    autogenerate=True,
                    rev_id=revision_id,
                )
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)
