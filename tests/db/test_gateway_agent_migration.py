"""Migration 0012_gateway_agent goes down and up again on each backend, ending with the schema the models
describe."""
from __future__ import annotations

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import robin.models  # noqa: F401
from robin.db import Base, _alembic_config, normalize_url, upgrade

BEFORE = "0011_rollback_state"
AGENT_COLUMNS = {"mount_state", "mount_error_code", "mount_error_status", "mount_error_message", "mount_reported_at"}


@pytest.fixture()
def fresh_url(backend, request, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'robin.db'}"
    server = request.getfixturevalue("postgres")
    if isinstance(server, str):
        pytest.skip("ROBIN_TEST_POSTGRES_URL names one database; this test needs to make its own")
    return server.create_database("robin_" + uuid.uuid4().hex[:12])


def _account_columns(url: str) -> dict[str, bool]:
    engine = create_engine(normalize_url(url))
    try:
        return {column["name"]: column["nullable"] for column in inspect(engine).get_columns("gateway_accounts")}
    finally:
        engine.dispose()


def _differences(url: str) -> list:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                    Base.metadata)
    finally:
        engine.dispose()


def test_the_gateway_agent_migration_goes_down_and_up(fresh_url):
    upgrade(fresh_url)
    command.downgrade(_alembic_config(fresh_url), BEFORE)
    columns = _account_columns(fresh_url)
    assert not AGENT_COLUMNS & set(columns) and columns["mount_path"] is False
    upgrade(fresh_url)
    columns = _account_columns(fresh_url)
    assert AGENT_COLUMNS <= set(columns) and columns["mount_path"] is True
    assert _differences(fresh_url) == []
