"""crawls

Revision ID: gateway_0003
Revises: gateway_0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0003"
down_revision: str | None = "gateway_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_crawl_rejects",
        sa.Column("crawl_id", sa.String(length=32), nullable=False),
        sa.Column("shard", sa.String(), nullable=False),
        sa.Column("sample_key", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("crawl_id", "shard", "sample_key"),
    )
    op.create_table(
        "gateway_crawl_shards",
        sa.Column("crawl_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("tiers", sa.Text(), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.Column("reused_from", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("crawl_id", "name"),
    )
    with op.batch_alter_table("gateway_crawl_shards", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_crawl_shards_fingerprint"), ["fingerprint"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_gateway_crawl_shards_status"), ["status"], unique=False
        )

    op.create_table(
        "gateway_crawls",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reference_set", sa.String(), nullable=False),
        sa.Column("keep", sa.String(length=16), nullable=False),
        sa.Column("rho", sa.Float(), nullable=True),
        sa.Column("namespace", sa.String(), nullable=False),
        sa.Column("caption_language", sa.String(length=8), nullable=True),
        sa.Column("shards_total", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        # uploads made before crawls existed are the crowd's
        batch_op.add_column(
            sa.Column("source", sa.String(length=8), nullable=False, server_default="crowd")
        )
        batch_op.add_column(sa.Column("crawl_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("shard", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("sample_key", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("alt_text", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("original_width", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("original_height", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("license", sa.String(), nullable=True))
        batch_op.create_index(batch_op.f("ix_gateway_images_crawl_id"), ["crawl_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateway_images_source"), ["source"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_images_source"))
        batch_op.drop_index(batch_op.f("ix_gateway_images_crawl_id"))
        batch_op.drop_column("license")
        batch_op.drop_column("original_height")
        batch_op.drop_column("original_width")
        batch_op.drop_column("alt_text")
        batch_op.drop_column("url")
        batch_op.drop_column("sample_key")
        batch_op.drop_column("shard")
        batch_op.drop_column("crawl_id")
        batch_op.drop_column("source")

    op.drop_table("gateway_crawls")
    with op.batch_alter_table("gateway_crawl_shards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_crawl_shards_status"))
        batch_op.drop_index(batch_op.f("ix_gateway_crawl_shards_fingerprint"))

    op.drop_table("gateway_crawl_shards")
    op.drop_table("gateway_crawl_rejects")
