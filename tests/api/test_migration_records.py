"""The migration records of a project (what `robin migrate gluster` reports), through the API."""
from __future__ import annotations

from sqlalchemy import select

from robin.audit.models import AuditEvent

RECORD = {"source": "gluster-1:/data", "volume_kind": "cephfs", "volume_name": "gluster-data", "status": "started",
          "report": {"size_bytes": 2**30}}


def path(project: str) -> str:
    return f"/api/v2/projects/{project}/migrations"


def test_records_are_kept_in_order_filtered_by_volume_and_audited(admin, new_project, db_rows):
    project = new_project()
    for status in ("started", "verified"):
        made = admin.post(path(project), json={**RECORD, "status": status, "report": {"files": 3}})
        assert made.status_code == 201, made.json
        assert made.json["project"] == project and made.json["actor"].startswith("token:")
    admin.post(path(project), json={**RECORD, "volume_name": "other"})
    page = admin.get(path(project), query_string={"volume_kind": "cephfs", "volume_name": "gluster-data"}).json
    assert [(r["status"], r["report"]) for r in page["items"]] == [("started", {"files": 3}),
                                                                  ("verified", {"files": 3})]
    assert page["next_cursor"] is None
    first = admin.get(path(project), query_string={"limit": 2}).json
    rest = admin.get(path(project), query_string={"limit": 2, "cursor": first["next_cursor"]}).json
    assert len(first["items"]) == 2 and [r["volume_name"] for r in rest["items"]] == ["other"]
    audited = db_rows(select(AuditEvent).where(AuditEvent.target == path(project)).order_by(AuditEvent.id))
    assert [event.details["request"]["status"] for event in audited] == ["started", "verified", "started"]


def test_who_may_record_and_read(new_project, as_role):
    project, other = new_project(), new_project()
    assert as_role("member", project).post(path(project), json=RECORD).status_code == 201
    denied = as_role("member", other).post(path(project), json=RECORD)
    assert denied.status_code == 403 and denied.json["error"]["code"] == "forbidden"
    auditor = as_role("auditor")
    assert auditor.post(path(project), json=RECORD).status_code == 403
    assert len(auditor.get(path(project)).json["items"]) == 1


def test_bad_records_are_refused_with_the_field_named(admin, new_project):
    project = new_project()
    for field, value in (("status", "done"), ("volume_kind", "nfs"), ("volume_name", "a/b"), ("source", "")):
        refused = admin.post(path(project), json={**RECORD, field: value})
        assert refused.status_code == 422 and field in refused.json["error"]["details"]["fields"], refused.json
    assert admin.get(path(project)).json["items"] == []
    missing = admin.post(path("no-such-project"), json=RECORD)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "project_not_found"
