"""accounts, sessions, reviews, review slots, points and the validator screening

Revision ID: gateway_0005
Revises: gateway_0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0005"
down_revision: str | None = "gateway_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gateway_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_accounts_email"), ["email"], unique=True)

    op.create_table(
        "gateway_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "kind", "image_id"),
    )
    with op.batch_alter_table("gateway_points", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_points_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "gateway_review_slots",
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("image_id", "slot"),
        sa.UniqueConstraint("image_id", "reviewer_id"),
    )
    with op.batch_alter_table("gateway_review_slots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_review_slots_reviewer_id"), ["reviewer_id"], unique=False
        )

    op.create_table(
        "gateway_reviews",
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("relevance", sa.Integer(), nullable=False),
        sa.Column("caption_fit", sa.String(length=8), nullable=False),
        sa.Column("pii", sa.Boolean(), nullable=False),
        sa.Column("unsafe", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "reviewer_id"),
    )
    with op.batch_alter_table("gateway_reviews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_reviews_reviewer_id"), ["reviewer_id"], unique=False
        )

    op.create_table(
        "gateway_screening_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gateway_screening_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_screening_attempts_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "gateway_screening_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("caption_en", sa.Text(), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("relevance", sa.Integer(), nullable=False),
        sa.Column("caption_fit", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "gateway_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("gateway_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_sessions_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_gateway_sessions_expires_at"), ["expires_at"], unique=False
        )

    with op.batch_alter_table("gateway_api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_gateway_api_keys_account_id"), ["account_id"], unique=False
        )

    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("category", sa.String(length=24), nullable=True))
        batch_op.add_column(
            sa.Column("review_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("reviews_needed", sa.Integer(), nullable=False, server_default="2")
        )
        batch_op.add_column(sa.Column("flag_quality", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("flag_caption_fit", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("flag_relevance", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("flag_overall", sa.Boolean(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_gateway_images_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_gateway_images_flag_overall"), ["flag_overall"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_images_flag_overall"))
        batch_op.drop_index(batch_op.f("ix_gateway_images_account_id"))
        batch_op.drop_column("flag_overall")
        batch_op.drop_column("flag_relevance")
        batch_op.drop_column("flag_caption_fit")
        batch_op.drop_column("flag_quality")
        batch_op.drop_column("reviews_needed")
        batch_op.drop_column("review_count")
        batch_op.drop_column("category")
        batch_op.drop_column("account_id")

    with op.batch_alter_table("gateway_api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_api_keys_account_id"))
        batch_op.drop_column("account_id")

    with op.batch_alter_table("gateway_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_gateway_sessions_account_id"))

    op.drop_table("gateway_sessions")
    op.drop_table("gateway_screening_items")
    with op.batch_alter_table("gateway_screening_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_screening_attempts_account_id"))

    op.drop_table("gateway_screening_attempts")
    with op.batch_alter_table("gateway_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_reviews_reviewer_id"))

    op.drop_table("gateway_reviews")
    with op.batch_alter_table("gateway_review_slots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_review_slots_reviewer_id"))

    op.drop_table("gateway_review_slots")
    with op.batch_alter_table("gateway_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_points_account_id"))

    op.drop_table("gateway_points")
    with op.batch_alter_table("gateway_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_accounts_email"))

    op.drop_table("gateway_accounts")
