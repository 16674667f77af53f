"""the reference set, tier source and boundaries version an image's tier was decided by
(records made before say null, and are not re-tiered)

Revision ID: gateway_0007
Revises: gateway_0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0007"
down_revision: str | None = "gateway_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference_set", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("tier_source", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("tiers_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.drop_column("tiers_version")
        batch_op.drop_column("tier_source")
        batch_op.drop_column("reference_set")
