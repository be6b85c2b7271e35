"""The migrations build exactly the tables the models declare, on SQLite and PostgreSQL."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tre.db import Database, metadata


def test_migrated_schema_matches_the_models(db):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata()) == []


def test_migrating_twice_changes_nothing(db):
    before, after = db.migrate()
    assert before == after == db.head_revision()


def test_the_audit_chain_starts_at_the_genesis_head(database_url):
    database = Database(database_url)
    assert database.current_revision() is None
    database.migrate()
    with database.engine.connect() as c:
        assert c.execute(sa.text("SELECT seq, hash FROM audit_head")).all() == [(0, "0" * 64)]
    database.dispose()
