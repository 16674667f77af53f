"""caption language confidence

Revision ID: gateway_0002
Revises: gateway_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0002"
down_revision: str | None = "gateway_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database that `create_all` made after the column was added is adopted at the baseline
    # with the column already there.
    columns = sa.inspect(op.get_bind()).get_columns("gateway_captions")
    if any(column["name"] == "language_confidence" for column in columns):
        return
    with op.batch_alter_table("gateway_captions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language_confidence", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_captions", schema=None) as batch_op:
        batch_op.drop_column("language_confidence")
