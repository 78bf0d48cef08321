"""The migrations build exactly the schema the models describe, on each backend."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

import robin.models  # noqa: F401
from robin.db import Base, normalize_url, pending_migrations


def test_migrated_schema_matches_the_models(database_url):
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_nothing_pending_after_upgrade(database_url):
    assert pending_migrations(database_url) == []
