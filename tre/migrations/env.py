"""Alembic environment: always run with the connection tre.db.Database hands over."""

from alembic import context

from tre.db import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # Our SQLite transactions (BEGIN IMMEDIATE) do cover DDL: a failed migration leaves nothing.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
