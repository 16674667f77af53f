"""The tables as `create_all` made them before migrations (databases from then are adopted here).

Revision ID: dedup_0001
Revises: (none)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "dedup_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dedup_insert_locks",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "dedup_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("groups", sa.Integer(), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dedup_phashes",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("phash", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("dedup_phashes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dedup_phashes_namespace"), ["namespace"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dedup_phashes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dedup_phashes_namespace"))

    op.drop_table("dedup_phashes")
    op.drop_table("dedup_jobs")
    op.drop_table("dedup_insert_locks")
