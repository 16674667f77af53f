"""The tables as `create_all` made them before migrations (databases from then are adopted here).

Revision ID: gateway_0001
Revises: (none)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gateway_api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_api_keys_prefix"), ["prefix"], unique=True)

    op.create_table(
        "gateway_captions",
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("location_aware", sa.Boolean(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("detected_language", sa.String(length=8), nullable=True),
        sa.Column("language_ok", sa.Boolean(), nullable=True),
        sa.Column("backend", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("prompt_kind", sa.String(length=16), nullable=True),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "language"),
    )
    with op.batch_alter_table("gateway_captions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_captions_status"), ["status"], unique=False)

    op.create_table(
        "gateway_images",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("phash", sa.String(length=16), nullable=True),
        sa.Column("countries", sa.String(), nullable=False),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("native_language", sa.String(length=8), nullable=True),
        sa.Column("caption_native", sa.Text(), nullable=True),
        sa.Column("caption_en", sa.Text(), nullable=True),
        sa.Column("want_caption", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.Column("best_country", sa.String(length=2), nullable=True),
        sa.Column("duplicate_of", sa.String(length=64), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_images_countries"), ["countries"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_gateway_images_duplicate_of"), ["duplicate_of"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_gateway_images_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateway_images_tier"), ["tier"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_images_tier"))
        batch_op.drop_index(batch_op.f("ix_gateway_images_status"))
        batch_op.drop_index(batch_op.f("ix_gateway_images_duplicate_of"))
        batch_op.drop_index(batch_op.f("ix_gateway_images_countries"))

    op.drop_table("gateway_images")
    with op.batch_alter_table("gateway_captions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_captions_status"))

    op.drop_table("gateway_captions")
    with op.batch_alter_table("gateway_api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_api_keys_prefix"))

    op.drop_table("gateway_api_keys")
