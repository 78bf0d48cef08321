"""Attack 7 of the tenant isolation issue: API tokens expire when told to, and can be listed without their secrets."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from robin.db import db, utcnow


def _expire(token_id: int) -> None:
    """Move the token's expiry into the past, as if its time had come; the process's token cache, which keeps the
    row it read (and checks its expires_at on every request), forgets it as it would after its TTL."""
    from robin.auth.models import ApiToken
    from robin.auth.service import token_cache

    with db.writing() as connection:
        connection.execute(update(ApiToken).where(ApiToken.id == token_id).values(expires_at=utcnow() - timedelta(1)))
    token_cache.clear()


def test_expired_token_gets_401(app, new_project):
    from robin.auth.models import Role
    from robin.auth.service import create_token

    project = new_project()
    with app.app_context():
        secret, token = create_token(Role.MEMBER, project=project, name="short-lived", expires_in=timedelta(days=30))
    assert abs(token.expires_at - (utcnow() + timedelta(days=30))) < timedelta(minutes=1)
    headers = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()
    assert client.get(f"/api/v2/projects/{project}", headers=headers).status_code == 200
    _expire(token.id)
    response = client.get(f"/api/v2/projects/{project}", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "token_expired"
    assert "expired" in response.json["error"]["message"] and "robin token create" in response.json["error"]["message"]


def test_token_list_shows_no_secret(app, new_project):
    from robin.auth.models import Role
    from robin.auth.service import create_token, list_tokens, revoke_token

    project = new_project()
    with app.app_context():
        secret, token = create_token(Role.MEMBER, project=project, name="listed", expires_in=timedelta(hours=1))
        revoke_token(token.id)
        listed = {row["id"]: row for row in list_tokens()}
    row = listed[token.id]
    assert set(row) == {"id", "name", "role", "project", "prefix", "created_at", "expires_at", "revoked_at"}
    assert (row["name"], row["role"], row["project"]) == ("listed", "member", project)
    assert row["prefix"] == secret[:12] and row["expires_at"] is not None and row["revoked_at"] is not None
    everything = repr(list(listed.values()))
    assert secret not in everything and secret[12:] not in everything and "token_hash" not in everything
