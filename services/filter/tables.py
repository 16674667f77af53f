"""The filter's SQL tables: reference sets, their vectors, running sums, calibrations."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Column, LargeBinary, Text
from sqlmodel import Field, SQLModel

from services.common.database import utcnow
from services.common.migrations import Schema


class ReferenceSetRow(SQLModel, table=True):
    __tablename__ = "filter_reference_sets"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=100)
    model: str = Field(max_length=100)
    dim: int | None = None
    description: str = ""
    rho: float | None = Field(default=None, description="applied calibration; None = model default")
    # Bumped by every change, so each replica knows when its cached centroids are stale.
    version: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class ReferenceRow(SQLModel, table=True):
    __tablename__ = "filter_references"

    id: int | None = Field(default=None, primary_key=True)
    set_id: int = Field(foreign_key="filter_reference_sets.id", index=True, ondelete="CASCADE")
    country: str | None = Field(default=None, max_length=2)
    sha256: str | None = Field(default=None, max_length=64)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # unit vector, float32
    created_at: datetime = Field(default_factory=utcnow)


class GroupSumRow(SQLModel, table=True):
    """Sum and count of a group's unit vectors: group "" is the whole set, else a country."""

    __tablename__ = "filter_group_sums"

    set_id: int = Field(
        foreign_key="filter_reference_sets.id", primary_key=True, ondelete="CASCADE"
    )
    group_key: str = Field(primary_key=True, max_length=2)
    count: int = 0
    vector_sum: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # float64


class CalibrationRow(SQLModel, table=True):
    __tablename__ = "filter_calibrations"

    id: int | None = Field(default=None, primary_key=True)
    set_id: int = Field(foreign_key="filter_reference_sets.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    target_precision: float
    recommended_rho: float | None = None
    precision_at_rho: float | None = None
    accepted_at_rho: int = 0
    samples: int
    table_json: str = Field(sa_column=Column(Text, nullable=False))
    applied: bool = False


FILTER_SCHEMA = Schema(
    service="filter",
    versions=Path(__file__).with_name("migrations"),
    baseline="filter_0001",
    baseline_tables=(
        "filter_reference_sets",
        "filter_references",
        "filter_group_sums",
        "filter_calibrations",
    ),
)
