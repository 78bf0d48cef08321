"""Projects, quotas, auth and the error shape, through the API (database only, no Ceph calls)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from robin.audit.models import AuditEvent
from robin.projects.models import Project, Quota
from robin.volumes.models import RbdImage
from tests.conftest import unique

QUOTA = {"max_bytes": 10 * 2**30, "max_volumes": 10, "max_snapshots": 5}


def test_create_get_list_project(admin, db_rows):
    name = unique("p")
    response = admin.post("/api/v2/projects", json={"name": name, "quota": QUOTA})
    assert response.status_code == 201
    assert response.json["name"] == name and response.json["quota"] == QUOTA
    assert admin.get(f"/api/v2/projects/{name}").json["quota"] == QUOTA
    [stored] = db_rows(select(Project).where(Project.name == name))
    assert stored.quota.max_bytes == QUOTA["max_bytes"] and stored.quota.max_volumes == 10


def test_project_list_is_paginated_with_a_cursor(admin, new_project):
    names = sorted(new_project() for _ in range(3))
    seen, cursor = [], None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = admin.get("/api/v2/projects", query_string=query).json
        assert len(page["items"]) <= 2
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen)
    assert set(names) <= set(seen)


def test_bad_cursor_is_a_400(admin):
    response = admin.get("/api/v2/projects", query_string={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_cursor"


def test_duplicate_project_is_409(admin, new_project):
    name = new_project()
    response = admin.post("/api/v2/projects", json={"name": name, "quota": QUOTA})
    assert response.status_code == 409
    assert response.json["error"]["code"] == "project_exists"


@pytest.mark.parametrize("body, field", [
    ({"name": "Bad_Name", "quota": QUOTA}, "name"),
    ({"name": "ok-name", "quota": QUOTA | {"max_bytes": -1}}, "quota"),
    ({"name": "ok-name", "quota": QUOTA | {"max_volumes": 1.5}}, "quota"),
    ({"name": "ok-name", "quota": QUOTA | {"max_bytes": "10"}}, "quota"),
    # beyond what the database's columns hold: "integer out of range" (a 500) on PostgreSQL
    ({"name": "ok-name", "quota": QUOTA | {"max_bytes": 2**63}}, "quota"),
    ({"name": "ok-name", "quota": QUOTA | {"max_volumes": 2**31}}, "quota"),
    ({"name": "ok-name", "quota": QUOTA | {"max_snapshots": 2**31}}, "quota"),
    ({"name": "ok-name", "quota": QUOTA, "colour": "blue"}, "colour"),
    ({"name": "ok-name"}, "quota"),
])
def test_bad_project_input_is_422_with_field_messages(admin, db_rows, body, field):
    response = admin.post("/api/v2/projects", json=body)
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]["fields"]
    assert db_rows(select(Project).where(Project.name == "ok-name")) == []


def test_project_name_with_trailing_newline_is_refused(admin, db_rows):
    """`$` matches before a final newline: "abc\n" must not pass for the DNS label "abc"."""
    name = unique("p")
    response = admin.post("/api/v2/projects", json={"name": name + "\n", "quota": QUOTA})
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "validation_error" and "name" in error["details"]["fields"]
    assert db_rows(select(Project).where(Project.name.in_([name + "\n", name]))) == []


# Each one more than its column holds (max_bytes: BigInteger; the counts: Integer).
BEYOND_THE_COLUMNS = [{"max_bytes": 2**63}, {"max_volumes": 2**31}, {"max_snapshots": 2**31}]


@pytest.mark.parametrize("beyond", BEYOND_THE_COLUMNS, ids=lambda beyond: next(iter(beyond)))
def test_quota_beyond_the_database_column_is_a_422_on_create(admin, db_rows, beyond):
    name = unique("p")
    response = admin.post("/api/v2/projects", json={"name": name, "quota": QUOTA | beyond})
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "validation_error" and "quota" in error["details"]["fields"]
    assert db_rows(select(Project).where(Project.name == name)) == []


@pytest.mark.parametrize("beyond", BEYOND_THE_COLUMNS, ids=lambda beyond: next(iter(beyond)))
def test_quota_beyond_the_database_column_is_a_422_on_patch(admin, new_project, db_rows, beyond):
    name = new_project()
    before = admin.get(f"/api/v2/projects/{name}").json["quota"]
    response = admin.patch(f"/api/v2/projects/{name}", json={"quota": beyond})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_error"
    [stored] = db_rows(select(Project).where(Project.name == name))
    assert {key: getattr(stored.quota, key) for key in before} == before


def test_largest_quota_the_columns_hold_is_accepted(admin, db_rows):
    name = unique("p")
    largest = {"max_bytes": 2**63 - 1, "max_volumes": 2**31 - 1, "max_snapshots": 2**31 - 1}
    response = admin.post("/api/v2/projects", json={"name": name, "quota": largest})
    assert response.status_code == 201, response.json
    [stored] = db_rows(select(Project).where(Project.name == name))
    assert stored.quota.max_bytes == 2**63 - 1 and stored.quota.max_snapshots == 2**31 - 1


def test_patch_quota(admin, new_project):
    name = new_project()
    response = admin.patch(f"/api/v2/projects/{name}", json={"quota": {"max_bytes": 2**30}})
    assert response.status_code == 200
    assert response.json["quota"]["max_bytes"] == 2**30
    assert response.json["quota"]["max_volumes"] == 100


def test_delete_empty_project(admin, new_project, db_rows):
    name = new_project()
    assert admin.delete(f"/api/v2/projects/{name}").status_code == 204
    assert admin.get(f"/api/v2/projects/{name}").status_code == 404
    assert db_rows(select(Project).where(Project.name == name)) == []


def test_unknown_project_is_404(admin):
    response = admin.get("/api/v2/projects/does-not-exist")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "project_not_found"


# --- auth ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v2/projects", "/api/v2/clusters", "/metrics"])
def test_no_token_is_401(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_wrong_token_is_401(app):
    response = app.test_client().get("/api/v2/projects", headers={"Authorization": "Bearer robin_nope"})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/api/v2/openapi.json", "/api/v2/docs"])
def test_public_endpoints_need_no_token(anonymous, path):
    assert anonymous.get(path).status_code == 200


def test_member_sees_only_its_project(as_role, new_project, db_rows):
    mine, other = new_project(), new_project()
    member = as_role("member", mine)
    assert member.get(f"/api/v2/projects/{mine}").status_code == 200
    response = member.get(f"/api/v2/projects/{other}")
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert [p["name"] for p in member.get("/api/v2/projects").json["items"]] == [mine]
    name = unique("i")
    refused = member.post(f"/api/v2/projects/{other}/rbd-images", json={"name": name, "size_bytes": 2**20})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert db_rows(select(RbdImage).where(RbdImage.name == name)) == []


def test_member_cannot_manage_projects(as_role, new_project, db_rows):
    mine = new_project()
    member = as_role("member", mine)
    before = db_rows(select(Quota).join(Project).where(Project.name == mine))[0].max_bytes
    refused = member.patch(f"/api/v2/projects/{mine}", json={"quota": {"max_bytes": 1}})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert db_rows(select(Quota).join(Project).where(Project.name == mine))[0].max_bytes == before
    name = unique("p")
    refused = member.post("/api/v2/projects", json={"name": name, "quota": QUOTA})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert db_rows(select(Project).where(Project.name == name)) == []
    refused = member.delete(f"/api/v2/projects/{mine}")
    assert refused.status_code == 403 and db_rows(select(Project).where(Project.name == mine))


def test_auditor_reads_everything_and_writes_nothing(as_role, new_project, admin):
    name = new_project()
    auditor = as_role("auditor")
    assert auditor.get(f"/api/v2/projects/{name}").status_code == 200
    assert auditor.get(f"/api/v2/projects/{name}/rbd-images").status_code == 200
    for response in (
        auditor.post("/api/v2/projects", json={"name": unique("p"), "quota": QUOTA}),
        auditor.post(f"/api/v2/projects/{name}/rbd-images", json={"name": unique("i"), "size_bytes": 2**20}),
        auditor.delete(f"/api/v2/projects/{name}"),
    ):
        assert response.status_code == 403
        assert response.json["error"]["code"] == "forbidden"
    assert admin.get(f"/api/v2/projects/{name}").status_code == 200


def _request_of(event: AuditEvent) -> dict:
    request = event.details.get("request")
    return request if isinstance(request, dict) else {}


def test_mutating_requests_are_audited(admin, anonymous, db_rows):
    name = unique("p")
    admin.post("/api/v2/projects", json={"name": name, "quota": QUOTA})
    admin.post("/api/v2/projects", json={"name": name, "quota": QUOTA})
    anonymous.delete(f"/api/v2/projects/{name}")
    events = db_rows(select(AuditEvent).where(AuditEvent.target.in_(
        ["/api/v2/projects", f"/api/v2/projects/{name}"])).order_by(AuditEvent.id))
    # Another test's request may be in the same table with a body audited as a string (too deeply nested to parse).
    mine = [e for e in events if _request_of(e).get("name") == name or e.target.endswith(name)]
    assert [(e.outcome, e.status_code, e.error_code) for e in mine] == [
        ("success", 201, None), ("failure", 409, "project_exists"), ("failure", 401, "unauthenticated")]
    assert mine[0].actor.startswith("token:") and mine[2].actor == "anonymous"
    assert mine[0].action == "POST /api/v2/projects"


def test_openapi_document_lists_the_api(anonymous):
    spec = anonymous.get("/api/v2/openapi.json").json
    assert {"/api/v2/projects", "/api/v2/projects/{project}/rbd-images",
            "/api/v2/projects/{project}/rbd-images/{name}", "/api/v2/projects/{project}/usage"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_malformed_json_is_a_400(admin):
    response = admin.post("/api/v2/projects", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_a_415_and_makes_nothing(admin, content_type):
    name = unique("p")
    body = json.dumps({"name": name, "quota": QUOTA})
    response = admin.post("/api/v2/projects", data=body, headers={"Content-Type": content_type} if content_type else {})
    assert response.status_code == 415, response.json
    error = response.json["error"]
    assert error["code"] == "unsupported_media_type" and "Content-Type: application/json" in error["message"]
    assert admin.get(f"/api/v2/projects/{name}").status_code == 404


def test_json_with_a_charset_or_a_json_suffix_is_json(admin):
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        name = unique("p")
        body = json.dumps({"name": name, "quota": QUOTA})
        assert admin.post("/api/v2/projects", data=body, content_type=content_type).status_code == 201
        assert admin.delete(f"/api/v2/projects/{name}").status_code == 204


def test_unknown_route_and_method_use_the_error_shape(admin):
    assert admin.get("/api/v2/nothing-here").json["error"]["code"] == "not_found"
    response = admin.put("/api/v2/projects", json={})
    assert response.status_code == 405 and response.json["error"]["code"] == "method_not_allowed"
