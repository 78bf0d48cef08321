"""Migration 0021_node_role goes down and up again on each backend: node tokens are refused by the constraint before
it, removed when going down (the older robin knows no such role), and accepted again after."""
from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from robin.db import _alembic_config, normalize_url, upgrade
from tests.db.test_gateway_agent_migration import _differences

BEFORE = "0020_cephfs_layouts"
INSERT = text("INSERT INTO api_tokens (name, token_hash, prefix, role, created_at) "
              "VALUES (:name, :hash, 'robin_x', :role, CURRENT_TIMESTAMP)")


@pytest.fixture()
def fresh_url(backend, request, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'robin.db'}"
    server = request.getfixturevalue("postgres")
    if isinstance(server, str):
        pytest.skip("ROBIN_TEST_POSTGRES_URL names one database; this test needs to make its own")
    return server.create_database("robin_" + uuid.uuid4().hex[:12])


def _insert_token(url: str, role: str) -> None:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(INSERT, {"name": role, "hash": uuid.uuid4().hex, "role": role})
    finally:
        engine.dispose()


def _roles(url: str) -> list[str]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            return sorted(connection.scalars(text("SELECT role FROM api_tokens")))
    finally:
        engine.dispose()


def test_the_node_role_migration_goes_down_and_up(fresh_url):
    upgrade(fresh_url)
    _insert_token(fresh_url, "node")
    _insert_token(fresh_url, "metrics")
    command.downgrade(_alembic_config(fresh_url), BEFORE)
    assert _roles(fresh_url) == ["metrics"]
    with pytest.raises(IntegrityError):
        _insert_token(fresh_url, "node")
    upgrade(fresh_url)
    _insert_token(fresh_url, "node")
    assert _roles(fresh_url) == ["metrics", "node"]
    assert _differences(fresh_url) == []
