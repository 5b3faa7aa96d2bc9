"""Alembic environment: migrations run on the connection handed over by
:func:`sdmatlas.catalog.db.upgrade` (no alembic.ini, no URL in a file)."""

from __future__ import annotations

from alembic import context

from sdmatlas.catalog.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
)
with context.begin_transaction():
    context.run_migrations()
