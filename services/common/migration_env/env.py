"""Alembic's environment for every seavl schema: run by services/common/migrations.py only.

The caller hands over the connection (inside its transaction and lock), the service's tables and
its version table; only tables named with the service's prefix are compared or touched, so the
services can share one database.
"""

from __future__ import annotations

from alembic import context

from services.common.migrations import environment_options

context.configure(**environment_options(context.config))
with context.begin_transaction():
    context.run_migrations()
