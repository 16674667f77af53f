"""sign-ins tried per email address, so that sign-in can be throttled

Revision ID: gateway_0008
Revises: gateway_0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0008"
down_revision: str | None = "gateway_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_sign_in_attempts",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email"),
    )
    with op.batch_alter_table("gateway_sign_in_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_sign_in_attempts_first_at"), ["first_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("gateway_sign_in_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_sign_in_attempts_first_at"))
    op.drop_table("gateway_sign_in_attempts")
