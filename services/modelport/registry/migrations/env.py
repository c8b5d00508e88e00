"""Alembic environment: always run online, on the connection `database.migrate` passes in."""

from __future__ import annotations

from alembic import context

from modelport.registry.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
