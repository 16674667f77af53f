"""The tables as `create_all` made them before migrations (databases from then are adopted here).

Revision ID: filter_0001
Revises: (none)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "filter_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "filter_reference_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("rho", sa.Float(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("filter_reference_sets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_filter_reference_sets_name"), ["name"], unique=True)

    op.create_table(
        "filter_calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target_precision", sa.Float(), nullable=False),
        sa.Column("recommended_rho", sa.Float(), nullable=True),
        sa.Column("precision_at_rho", sa.Float(), nullable=True),
        sa.Column("accepted_at_rho", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("table_json", sa.Text(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["filter_reference_sets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("filter_calibrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_filter_calibrations_set_id"), ["set_id"], unique=False)

    op.create_table(
        "filter_group_sums",
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("group_key", sa.String(length=2), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("vector_sum", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["filter_reference_sets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("set_id", "group_key"),
    )
    op.create_table(
        "filter_references",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["filter_reference_sets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("filter_references", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_filter_references_set_id"), ["set_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("filter_references", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_filter_references_set_id"))

    op.drop_table("filter_references")
    op.drop_table("filter_group_sums")
    with op.batch_alter_table("filter_calibrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_filter_calibrations_set_id"))

    op.drop_table("filter_calibrations")
    with op.batch_alter_table("filter_reference_sets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_filter_reference_sets_name"))

    op.drop_table("filter_reference_sets")
