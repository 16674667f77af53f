"""One embedded vector store per dedup database.

The embedded store's folder is locked against a second process (services/dedup/embedded.py), but
two dedup processes with a folder each, sharing one database (its pHashes and insert locks),
would each keep their own copy of every near-duplicate. So the process that opens an embedded
store also claims its database for as long as it runs: a PostgreSQL session advisory lock on a
connection of its own (advisory locks belong to one database, so other databases on the server
are free), or a file lock beside a SQLite file. Several dedup processes share a Qdrant server
instead, which needs no claim.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from services.common.database import is_postgres, sqlite_file
from services.common.locks import LockHeld, hold_exclusive
from services.dedup.embedded import StoreInUseError

# "dedupemb" in ASCII: the one advisory lock of the embedded store in a dedup database.
EMBEDDED_STORE_LOCK_KEY = 0x6465647570656D62
SEVERAL_PROCESSES = "for several dedup processes, set QDRANT_URL to a Qdrant server they share"


class DatabaseClaim:
    """Held from start-up to shutdown by the process that has the embedded store open."""

    def __init__(self, connection: Connection | None, lock_file: IO[str] | None) -> None:
        self._connection = connection
        self._lock_file = lock_file

    def release(self) -> None:
        if self._connection is not None:
            self._connection.close()  # the session ends, and its advisory lock with it
            self._connection = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _claim_postgres(engine: Engine, folder: Path) -> DatabaseClaim:
    connection = engine.connect()
    try:
        claimed = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": EMBEDDED_STORE_LOCK_KEY}
        ).scalar_one()
        connection.commit()  # the lock is the session's; no transaction need stay open
    except BaseException:
        connection.close()
        raise
    if claimed:
        return DatabaseClaim(connection, None)
    holder = connection.execute(
        text(
            "SELECT a.pid, a.client_addr FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = ("
            "SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
        ),
        {"key": EMBEDDED_STORE_LOCK_KEY},
    ).first()
    connection.close()
    who = f"server process {holder[0]} for {holder[1] or 'a local client'}" if holder else "?"
    raise StoreInUseError(
        f"another dedup process with an embedded store already uses this database ({who}); "
        f"a second store in {folder} would keep its own copy of every near-duplicate: "
        f"{SEVERAL_PROCESSES}"
    )


def _claim_sqlite(database: str, folder: Path) -> DatabaseClaim:
    holder = f"process {os.getpid()} (store {folder.resolve()})"
    try:
        return DatabaseClaim(None, hold_exclusive(Path(f"{database}.embedded-store.lock"), holder))
    except LockHeld as held:
        raise StoreInUseError(
            f"the database {database} is used by the embedded store of "
            f"{held.holder or 'another process'}; a second store in {folder} would keep its own "
            f"copy of every near-duplicate: {SEVERAL_PROCESSES}"
        ) from None


def claim_database(engine: Engine, folder: Path) -> DatabaseClaim:
    """Claims the dedup database for the embedded store in `folder`, or raises
    `StoreInUseError` naming who has it."""
    if is_postgres(engine):
        return _claim_postgres(engine, folder)
    database = sqlite_file(engine)
    if database is not None:
        return _claim_sqlite(database, folder)
    return DatabaseClaim(None, None)
