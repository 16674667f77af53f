"""the privacy and safety pass: faces, plates, blurred, unsafe score, held (records made
before it say null: not run)

Revision ID: gateway_0006
Revises: gateway_0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0006"
down_revision: str | None = "gateway_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("faces", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("plates", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("privacy_regions", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("blurred", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("unsafe_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("privacy_models", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(batch_op.f("ix_gateway_images_faces"), ["faces"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateway_images_held"), ["held"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gateway_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_images_held"))
        batch_op.drop_index(batch_op.f("ix_gateway_images_faces"))
        batch_op.drop_column("held")
        batch_op.drop_column("privacy_models")
        batch_op.drop_column("unsafe_score")
        batch_op.drop_column("blurred")
        batch_op.drop_column("privacy_regions")
        batch_op.drop_column("plates")
        batch_op.drop_column("faces")
