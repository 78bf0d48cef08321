"""`robin token create|list|show|revoke` as an admin's machine runs them: subprocesses with no database, calling the
session's real `robin serve`; what they print is compared with what the API answers, refusals are `code: message`
with exit status 1 and change nothing. The --direct mode (a robin host's database): tests/cli/test_cli.py."""
from __future__ import annotations

import csv
import io
import json

import requests
import yaml

from tests.cli.conftest import ok, refused, table
from tests.cli.test_audit_events_cli import robin
from tests.conftest import make_token


def every_token(api) -> list[dict]:
    """Every page of GET /api/v2/tokens, as an admin."""
    items, cursor = [], None
    while True:
        page = api("GET", "/api/v2/tokens", params={"limit": 1000} | ({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _status_with(robin_url: str, secret: str) -> int:
    return requests.get(robin_url + "/api/v2/projects", headers={"Authorization": f"Bearer {secret}"},
                        timeout=30).status_code


def test_a_member_token_made_listed_shown_and_revoked(cli, api, new_project, robin_url):
    project = new_project()
    secret = ok(cli("token", "create", "--project", project, "--name", "cli-member", "--expires-in", "30d"))
    assert secret.startswith("robin_") and secret.count("\n") == 1
    secret = secret.strip()
    assert _status_with(robin_url, secret) == 200

    listed = json.loads(ok(cli("token", "list", "-o", "json")))
    assert listed == every_token(api)
    [mine] = [item for item in listed if item["prefix"] == secret[:12]]
    assert (mine["name"], mine["role"], mine["project"], mine["revoked_at"]) == ("cli-member", "member", project, None)
    assert mine["expires_at"] is not None
    token_id = str(mine["id"])
    assert token_id in ok(cli("token", "list", "-o", "name")).splitlines()
    rows = {row["ID"]: row for row in table(ok(cli("token", "list")))}
    assert (rows[token_id]["NAME"], rows[token_id]["ROLE"], rows[token_id]["PROJECT"]) == (
        "cli-member", "member", project)
    assert rows[token_id]["REVOKED"] == "-"
    assert {row["id"] for row in csv.DictReader(io.StringIO(ok(cli("token", "list", "-o", "csv"))))} >= {token_id}
    shown = yaml.safe_load(ok(cli("token", "show", token_id, "-o", "yaml")))
    assert shown == api("GET", f"/api/v2/tokens/{token_id}") == mine
    everything = "".join(ok(cli("token", *args)) for args in (("list", "-o", "wide"), ("show", token_id)))
    assert secret[12:] not in everything + json.dumps(listed)

    assert ok(cli("token", "revoke", token_id)) == ""
    assert _status_with(robin_url, secret) == 401  # at once, whichever worker answers
    assert json.loads(ok(cli("token", "show", token_id, "-o", "json")))["revoked_at"] is not None


def test_create_answers_the_token_with_its_fields_in_json(cli, robin_url):
    made = json.loads(ok(cli("token", "create", "--auditor", "--name", "cli-auditor", "-o", "json")))
    assert (made["role"], made["name"], made["project"], made["prefix"]) == (
        "auditor", "cli-auditor", None, made["secret"][:12])
    assert _status_with(robin_url, made["secret"]) == 200
    ok(cli("token", "revoke", str(made["id"])))


def test_refusals_are_code_and_message_and_change_nothing(cli, api, robin_url, app, new_project):
    before = every_token(api)
    assert "project 'no-such-project'" in refused(cli("token", "create", "--project", "no-such-project"),
                                                  "project_not_found")
    assert "exactly one project" in refused(cli("token", "create", "--admin", "--project", new_project()),
                                            "validation_error")
    assert "robin token list" in refused(cli("token", "revoke", "2147483647"), "token_not_found")
    refused(cli("token", "show", "2147483647"), "token_not_found")
    member = make_token(app, "member", new_project())
    for args in (("list",), ("show", str(before[0]["id"])), ("create", "--admin"), ("revoke", str(before[0]["id"]))):
        assert "admin token" in refused(cli("token", *args, token=member), "forbidden")
    after = every_token(api)
    assert after[:len(before)] == before and [item["name"] for item in after[len(before):]] == ["test-member"]


def test_without_an_api_the_command_points_to_direct(tmp_path):
    result = robin("token", "list", env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert (result.returncode, result.stdout) == (1, "")
    assert "ROBIN_URL" in result.stderr and "--direct" in result.stderr and "Traceback" not in result.stderr
