"""/api/v2/tokens: admins make, list, read and revoke tokens over the API; the secret is answered once and kept
nowhere, not even in the audit trail; a revoked token is refused by every worker once the revoke is answered; bad
input is refused with nothing made. Who else is refused: tests/integration/test_authz_matrix.py."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from robin.audit.models import AuditEvent
from robin.auth.models import ApiToken
from robin.db import utcnow
from robin.pagination import encode_cursor

TOKENS = "/api/v2/tokens"
LISTED = {"id", "name", "role", "project", "prefix", "created_at", "expires_at", "revoked_at"}


def every_token(admin, limit: int) -> list[dict]:
    items, cursor = [], None
    while True:
        response = admin.get(TOKENS, query_string={"limit": limit} | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.json
        items += response.json["items"]
        cursor = response.json["next_cursor"]
        if cursor is None:
            return items


def test_a_member_token_made_listed_read_and_revoked(app, admin, new_project, db_rows):
    project = new_project()
    made = admin.post(TOKENS, json={"role": "member", "project": project, "name": "ci", "expires_in": "30d"})
    assert made.status_code == 201, made.json
    secret = made.json["secret"]
    assert secret.startswith("robin_") and made.json["prefix"] == secret[:12]
    assert (made.json["role"], made.json["project"], made.json["name"], made.json["revoked_at"]) == (
        "member", project, "ci", None)
    expires_at = made.json["expires_at"]
    assert abs(_parsed(expires_at) - (utcnow() + timedelta(days=30))) < timedelta(minutes=5)

    member = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()
    assert client.get(f"/api/v2/projects/{project}", headers=member).status_code == 200

    token_id = made.json["id"]
    shown = admin.get(f"{TOKENS}/{token_id}")
    assert shown.status_code == 200 and set(shown.json) == LISTED
    assert shown.json == {key: value for key, value in made.json.items() if key != "secret"}
    listed = {item["id"]: item for item in every_token(admin, limit=2)}  # several pages
    assert listed[token_id] == shown.json
    assert list(listed) == sorted(listed)
    assert all(set(item) == LISTED for item in listed.values())
    everything = json.dumps(list(listed.values())) + json.dumps(shown.json)
    assert secret[12:] not in everything

    assert admin.delete(f"{TOKENS}/{token_id}").status_code == 204
    assert client.get(f"/api/v2/projects/{project}", headers=member).status_code == 401
    assert admin.get(f"{TOKENS}/{token_id}").json["revoked_at"] is not None
    assert admin.delete(f"{TOKENS}/{token_id}").status_code == 204  # again: still revoked, nothing else

    stored = json.dumps([[str(value) for value in row] for row in _audit_rows(db_rows)])
    assert secret[12:] not in stored and "ci" in stored  # the POST's row is there, without the secret


def test_an_admin_token_never_expires_unless_told(admin):
    made = admin.post(TOKENS, json={"role": "admin"})
    assert made.status_code == 201, made.json
    assert (made.json["name"], made.json["project"], made.json["expires_at"]) == ("admin", None, None)
    assert admin.delete(f"{TOKENS}/{made.json['id']}").status_code == 204


def test_a_revoked_token_is_refused_by_every_worker_once_the_revoke_is_answered(robin_url, robin_api, new_project):
    """The session's robin serves with two workers, each with its own token cache: warm both (a connection of its own
    per request lands on either), revoke through one, and no request may pass any more."""
    made = robin_api("POST", TOKENS, json={"role": "auditor", "name": "everywhere"})
    assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['secret']}"}
    assert {requests.get(robin_url + "/api/v2/projects", headers=headers, timeout=30).status_code
            for _ in range(20)} == {200}
    assert robin_api("DELETE", f"{TOKENS}/{made.json()['id']}").status_code == 204
    assert {requests.get(robin_url + "/api/v2/projects", headers=headers, timeout=30).status_code
            for _ in range(20)} == {401}


@pytest.mark.parametrize(("body", "status", "code", "said"), [
    ({"role": "member"}, 422, "validation_error", "exactly one project"),
    ({"role": "admin", "project": "{project}"}, 422, "validation_error", "exactly one project"),
    ({"role": "member", "project": "no-such-project"}, 404, "project_not_found", "does not exist"),
    ({"role": "root"}, 422, "validation_error", "role"),
    ({"role": "admin", "expires_in": "soon"}, 422, "validation_error", "not a lifetime"),
    ({"role": "admin", "expires_in": "0d"}, 422, "validation_error", "positive"),
    ({"role": "admin", "expires_in": "11000d"}, 422, "validation_error", "at most 10 years"),
    ({"role": "admin", "name": "x" * 129}, 422, "validation_error", "name"),
    ({"name": "no role"}, 422, "validation_error", "role"),
])
def test_bad_input_makes_no_token(admin, new_project, db_rows, body, status, code, said):
    project = new_project()
    body = {key: value.format(project=project) for key, value in body.items()}
    before = db_rows(select(func.count()).select_from(ApiToken))
    response = admin.post(TOKENS, json=body)
    assert (response.status_code, response.json["error"]["code"]) == (status, code), response.json
    assert said in json.dumps(response.json["error"])
    assert db_rows(select(func.count()).select_from(ApiToken)) == before


@pytest.mark.parametrize("token_id", ["0", "999999999", str(2**40), "-1", "ci", "\u0663"])
def test_an_unknown_token_is_not_found(admin, db_rows, token_id):
    before = db_rows(select(ApiToken.revoked_at).order_by(ApiToken.id))
    for method in ("get", "delete"):
        response = getattr(admin, method)(f"{TOKENS}/{token_id}")
        assert (response.status_code, response.json["error"]["code"]) == (404, "token_not_found"), response.json
        assert "robin token list" in response.json["error"]["message"]
    assert db_rows(select(ApiToken.revoked_at).order_by(ApiToken.id)) == before


@pytest.mark.parametrize("cursor", ["nonsense", encode_cursor("a-name"), encode_cursor([1, 2])])
def test_a_cursor_not_of_this_listing_is_refused(admin, cursor):
    response = admin.get(TOKENS, query_string={"cursor": cursor})
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_cursor"), response.json


def _audit_rows(db_rows) -> list:
    return [(event.actor, event.action, event.target, event.details)
            for event in db_rows(select(AuditEvent).where(AuditEvent.target.like(f"{TOKENS}%")))]


def _parsed(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)
