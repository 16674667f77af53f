"""The schemas seavl owns, and the database each service's settings point at: what `seavl db`
upgrades (services/common/migrations.py does the work)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from services.common.database import DatabasePool, make_engine
from services.common.migrations import Schema, current_revision, downgrade, upgrade


@dataclass(frozen=True)
class OwnedSchema:
    schema: Schema
    database_url: Callable[[], str]


# `seavl db upgrade` holds one connection and its advisory lock's: counted in README's budget
MIGRATION_POOL = DatabasePool(size=2, overflow=0)


def _gateway() -> OwnedSchema:
    from services.gateway.config import GatewaySettings
    from services.gateway.tables import GATEWAY_SCHEMA

    return OwnedSchema(GATEWAY_SCHEMA, lambda: GatewaySettings().database_url)


def _filter() -> OwnedSchema:
    from services.filter.config import FilterSettings
    from services.filter.tables import FILTER_SCHEMA

    return OwnedSchema(FILTER_SCHEMA, lambda: FilterSettings().database_url)


def _dedup() -> OwnedSchema:
    from services.dedup.config import DedupSettings
    from services.dedup.tables import DEDUP_SCHEMA

    return OwnedSchema(DEDUP_SCHEMA, lambda: DedupSettings().database_url)


OWNERS: dict[str, Callable[[], OwnedSchema]] = {
    "gateway": _gateway,
    "filter": _filter,
    "dedup": _dedup,
}


def owned_schemas(services: list[str] | None = None) -> list[OwnedSchema]:
    return [OWNERS[name]() for name in services or list(OWNERS)]


@contextmanager
def _engine(owned: OwnedSchema, database_url: str | None = None) -> Iterator[Engine]:
    # migrations use one connection (and the advisory lock's)
    engine = make_engine(database_url or owned.database_url(), pool=MIGRATION_POOL)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade_all(database_url: str | None = None, services: list[str] | None = None) -> list[str]:
    """Brings each service's tables to head, in its own database unless `database_url` is given
    (one database for all, as tests and `make run` use); returns a line per service."""
    lines = []
    for owned in owned_schemas(services):
        with _engine(owned, database_url) as engine:
            lines.append(f"{owned.schema.service}: at {upgrade(owned.schema, engine)}")
    return lines


def downgrade_all(revision: str, services: list[str]) -> list[str]:
    lines = []
    for owned in owned_schemas(services):
        with _engine(owned) as engine:
            lines.append(f"{owned.schema.service}: at {downgrade(owned.schema, engine, revision)}")
    return lines


def describe_all(services: list[str] | None = None) -> list[str]:
    lines = []
    for owned in owned_schemas(services):
        with _engine(owned) as engine:
            current = current_revision(owned.schema, engine) or "none"
            head = owned.schema.head
            state = "up to date" if current == head else f"needs {head}"
            lines.append(f"{owned.schema.service}: at {current} ({state}) in {engine.url!r}")
    return lines
