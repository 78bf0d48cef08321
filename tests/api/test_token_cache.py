"""The per-process token cache: a request's token is read from the database at most every TOKEN_CACHE_TTL_S, and a
revoked token stops working at once in the process that revoked it, within that bound everywhere else."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from robin.auth.models import ApiToken, Role
from robin.auth.service import TOKEN_CACHE_TTL_S, TokenCache, create_token, revoke_token, token_cache
from robin.db import db, utcnow


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_forgotten_after_its_ttl():
    clock = Clock()
    cache = TokenCache(ttl=2.0, size=8, clock=clock)
    cache.put("a", "row-a", clock.now)
    clock.now = 1.9
    assert cache.get("a") == "row-a"
    clock.now = 2.0
    assert cache.get("a") is None


def test_an_entry_ages_from_when_its_read_began():
    """A row read before a revocation committed and put after it is still forgotten ttl after the read began."""
    clock = Clock()
    cache = TokenCache(ttl=2.0, size=8, clock=clock)
    clock.now = 1.5
    cache.put("a", "row-a", 0.5)
    clock.now = 2.5
    assert cache.get("a") is None


def test_the_oldest_entries_go_beyond_its_size():
    cache = TokenCache(ttl=60, size=2, clock=Clock())
    for key in ("a", "b", "c"):
        cache.put(key, f"row-{key}", 0.0)
    assert [cache.get(key) for key in ("a", "b", "c")] == [None, "row-b", "row-c"]


def _member(app, project: str):
    with app.app_context():
        secret, token = create_token(Role.MEMBER, project=project, name="cached")
    return {"Authorization": f"Bearer {secret}"}, token.id


def test_a_token_revoked_in_this_process_fails_at_once(app, new_project):
    project = new_project()
    headers, token_id = _member(app, project)
    client = app.test_client()
    assert client.get(f"/api/v2/projects/{project}", headers=headers).status_code == 200  # cached now
    with app.app_context():
        revoke_token(token_id)
    assert client.get(f"/api/v2/projects/{project}", headers=headers).status_code == 401


def test_a_token_revoked_elsewhere_fails_once_the_ttl_has_passed(app, new_project):
    """Another worker or replica (or `robin token revoke`) writes revoked_at; this process's cache does not
    hear of it, and reads the row again after TOKEN_CACHE_TTL_S."""
    project = new_project()
    headers, token_id = _member(app, project)
    client = app.test_client()
    assert client.get(f"/api/v2/projects/{project}", headers=headers).status_code == 200
    assert token_cache.get(_hash_of(headers)) is not None
    with db.writing() as connection:
        connection.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=utcnow()))
    time.sleep(TOKEN_CACHE_TTL_S)
    assert client.get(f"/api/v2/projects/{project}", headers=headers).status_code == 401


def test_a_deleted_projects_tokens_are_forgotten_everywhere_before_its_name_can_be_taken_again(app, admin, new_project):
    """Tokens are cached by project name. Another worker's cache, which the delete cannot reach, holds the member's
    token read before the delete; by the time the delete answers, that entry has aged out, so a project made again
    under the name does not take the old member in."""
    project = new_project()
    headers, _ = _member(app, project)
    client = app.test_client()
    assert client.get(f"/api/v2/projects/{project}", headers=headers).status_code == 200
    elsewhere = TokenCache()
    elsewhere.put(_hash_of(headers), token_cache.get(_hash_of(headers)), elsewhere.clock())
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204
    assert elsewhere.get(_hash_of(headers)) is None
    quota = {"max_bytes": 2**30, "max_volumes": 1, "max_snapshots": 1}
    assert admin.post("/api/v2/projects", json={"name": project, "quota": quota}).status_code == 201
    assert client.get(f"/api/v2/projects/{project}", headers=headers).status_code == 401
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


def test_an_unknown_token_is_not_cached(app, new_project):
    client = app.test_client()
    headers = {"Authorization": "Bearer robin_" + "x" * 43}
    assert client.get("/api/v2/projects", headers=headers).status_code == 401
    assert token_cache.get(_hash_of(headers)) is None


def test_a_token_read_from_postgresql_is_its_statement_alone(app, new_project, backend):
    """Read when the cache has no entry (every TOKEN_CACHE_TTL_S per process and token): in autocommit, so no BEGIN
    before it and no ROLLBACK after it, two round trips of three; still the token's current row."""
    from psycopg.pq import TransactionStatus
    from sqlalchemy import event

    if backend == "sqlite":
        pytest.skip("SQLite's BEGIN and ROLLBACK cost no round trip")
    project = new_project()
    headers, token_id = _member(app, project)
    seen = []

    def after_execute(connection, _cursor, statement, _parameters, _context, _executemany):
        if "FROM api_tokens" in statement:  # IDENTITY_QUERY's, the request's only statement on that table
            seen.append(connection.connection.dbapi_connection.info.transaction_status)

    token_cache.clear()
    event.listen(db.engine, "after_cursor_execute", after_execute)
    try:
        assert app.test_client().get(f"/api/v2/projects/{project}", headers=headers).status_code == 200
    finally:
        event.remove(db.engine, "after_cursor_execute", after_execute)
    assert seen == [TransactionStatus.IDLE]
    assert token_cache.get(_hash_of(headers)).id == token_id


def _hash_of(headers: dict) -> str:
    from robin.auth.service import hash_secret

    return hash_secret(headers["Authorization"].split(" ", 1)[1])
