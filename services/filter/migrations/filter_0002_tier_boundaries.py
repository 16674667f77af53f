"""tier boundaries with a source and a version per set, the observed-score sketch, and the
calibrations' labelled scores (issue 15); sets made before start on their model's default

Revision ID: filter_0002
Revises: filter_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "filter_0002"
down_revision: str | None = "filter_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("filter_reference_sets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("references_version", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("filter_calibrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("samples_json", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("references_version", sa.Integer(), nullable=True))
    op.create_table(
        "filter_tier_boundaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("bronze", sa.Float(), nullable=True),
        sa.Column("silver", sa.Float(), nullable=True),
        sa.Column("gold", sa.Float(), nullable=True),
        sa.Column("platinum", sa.Float(), nullable=True),
        sa.Column("diamond", sa.Float(), nullable=True),
        sa.Column("shares_json", sa.Text(), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("references_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["filter_reference_sets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("set_id", "version"),
    )
    with op.batch_alter_table("filter_tier_boundaries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_filter_tier_boundaries_set_id"), ["set_id"], unique=False
        )
    op.create_table(
        "filter_score_sketches",
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("references_version", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("fitted_at_count", sa.Integer(), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["filter_reference_sets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("set_id"),
    )


def downgrade() -> None:
    op.drop_table("filter_score_sketches")
    with op.batch_alter_table("filter_tier_boundaries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_filter_tier_boundaries_set_id"))
    op.drop_table("filter_tier_boundaries")
    with op.batch_alter_table("filter_calibrations", schema=None) as batch_op:
        batch_op.drop_column("references_version")
        batch_op.drop_column("samples_json")
    with op.batch_alter_table("filter_reference_sets", schema=None) as batch_op:
        batch_op.drop_column("references_version")
