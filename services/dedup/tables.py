"""The dedup service's SQL tables: insert locks, pHashes (with a change log order), batch jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from services.common.database import utcnow
from services.common.migrations import Schema


class InsertLockRow(SQLModel, table=True):
    """One row per namespace; updating it serialises insert-if-unique across all replicas."""

    __tablename__ = "dedup_insert_locks"

    key: str = Field(primary_key=True, max_length=200)
    version: int = 0


class PHashRow(SQLModel, table=True):
    """Append-only: the latest row of an image says whether its pHash is live or deleted.

    Replicas catch up on rows past the last `seq` they saw, so every replica answers from the
    same hashes without rescanning.
    """

    __tablename__ = "dedup_phashes"

    seq: int | None = Field(default=None, primary_key=True)
    namespace: str = Field(index=True, max_length=64)
    sha256: str = Field(max_length=64)
    phash: int = Field(sa_column=Column(BigInteger, nullable=False))  # the 64 bits, signed
    deleted: bool = False


class BatchJobStatus(StrEnum):
    """A batch dedup job's states: it runs in a thread of one replica, so it has no queue to
    retry from; a job whose replica stopped reporting is read as interrupted (run it again)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class JobRow(SQLModel, table=True):
    __tablename__ = "dedup_jobs"

    id: str = Field(primary_key=True, max_length=36)
    namespace: str
    model: str
    threshold: float
    status: str = BatchJobStatus.QUEUED.value
    processed: int = 0
    total: int = 0
    groups: int = 0
    result_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


DEDUP_SCHEMA = Schema(
    service="dedup",
    versions=Path(__file__).with_name("migrations"),
    baseline="dedup_0001",
    baseline_tables=("dedup_insert_locks", "dedup_phashes", "dedup_jobs"),
)
