"""The filter's SQL tables: reference sets, their vectors, running sums, calibrations."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint
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
    # Bumped when references are added or removed: scores made before are on another scale.
    references_version: int = 0
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
    samples_json: str | None = Field(
        default=None,
        sa_column=Column(Text, nullable=True),
        description="JSON [[score, label], ...], for calibrated tiers; None before they existed",
    )
    references_version: int | None = Field(default=None, description="the set's, when made")


class TierBoundariesRow(SQLModel, table=True):
    """One version of a set's tier boundaries; the highest version is in force. A new version is
    recorded for every change, so a stored tier names the boundaries it was decided with."""

    __tablename__ = "filter_tier_boundaries"
    __table_args__ = (UniqueConstraint("set_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    set_id: int = Field(foreign_key="filter_reference_sets.id", index=True, ondelete="CASCADE")
    version: int
    source: str = Field(max_length=16, description="TierSource")
    basis: str = Field(max_length=16, description="TierBasis")
    bronze: float | None = None
    silver: float | None = None
    gold: float | None = None
    platinum: float | None = None
    diamond: float | None = None
    shares_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    samples: int = Field(default=0, description="scores or labelled samples it was fitted on")
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    references_version: int = Field(description="the set's references it was made for")
    created_at: datetime = Field(default_factory=utcnow)


class ScoreSketchRow(SQLModel, table=True):
    """The streaming sketch of the scores a crawl asked to be observed, for `shares` boundaries
    that settle as the crawl runs; emptied when the set's references change."""

    __tablename__ = "filter_score_sketches"

    set_id: int = Field(
        foreign_key="filter_reference_sets.id", primary_key=True, ondelete="CASCADE"
    )
    references_version: int
    count: int = 0
    fitted_at_count: int = Field(default=0, description="its size at the last fit from it")
    counts: bytes = Field(sa_column=Column(LargeBinary, nullable=False), description="ScoreSketch")


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
