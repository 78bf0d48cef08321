"""`GET /api/v2/audit/events`: who sees which events, each filter, the pages, and bad filter values."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.conftest import unique

EVENTS = "/api/v2/audit/events"
MiB = 2**20


def listed(api, **query) -> list[dict]:
    """Every page of the events matching `query`, in the order the API gives them."""
    items, cursor = [], None
    while True:
        response = api.get(EVENTS, query_string=query | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.json
        items += response.json["items"]
        cursor = response.json["next_cursor"]
        if cursor is None:
            return items


def actor_of(app, api) -> str:
    """The actor the events of this client's requests name."""
    from robin.auth.service import identity_for_secret

    with app.app_context():
        return identity_for_secret(api.token).actor


@pytest.fixture()
def two_projects(new_project, as_role):
    """Two projects, each with a member client, and events in each: a quota change and a refused delete."""
    made = {}
    for _ in range(2):
        project = new_project()
        member = as_role("member", project)
        assert member.delete(f"/api/v2/projects/{project}/rbd-images/{unique('gone')}").status_code == 404
        made[project] = member
    return made


def test_admins_and_auditors_see_every_project_members_their_own(app, admin, as_role, two_projects):
    (mine, member), (theirs, _) = two_projects.items()
    for reader in (admin, as_role("auditor")):
        for project, writer in two_projects.items():
            assert {item["project"] for item in listed(reader, actor=actor_of(app, writer))} == {project}
    seen = listed(member, limit=1000)
    assert seen and {item["project"] for item in seen} == {mine}
    assert [item for item in listed(member, project=mine) if item["outcome"] == "failure"]


def test_a_member_naming_another_project_is_refused(app, two_projects):
    (mine, member), (theirs, _) = two_projects.items()
    refused = member.get(EVENTS, query_string={"project": theirs})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    # Filters cannot widen what a member sees: another project's actor or target still gives only its own.
    other_actor = actor_of(app, two_projects[theirs])
    assert listed(member, actor=other_actor) == []


def test_a_members_events_leave_out_those_of_no_project(app, admin, as_role, new_project):
    project = new_project()
    member, auditor = as_role("member", project), as_role("auditor")
    assert auditor.post("/api/v2/projects", json={"name": unique("p"), "quota": {}}).status_code in (403, 422)
    [refused] = listed(admin, actor=actor_of(app, auditor))
    assert refused["project"] is None and refused["outcome"] == "failure"
    assert refused not in listed(member, limit=1000)


@pytest.mark.usefixtures("ceph_conf")  # creates volumes in Ceph
def test_each_filter(app, admin, as_role, new_project):
    project = new_project()
    writer = as_role("member", project)
    started = datetime.now(UTC)
    volume, snapshot = unique("vol"), unique("snap")
    created = writer.post(f"/api/v2/projects/{project}/rbd-images", json={"name": volume, "size_bytes": MiB})
    assert created.status_code == 201, created.json
    base = f"/api/v2/projects/{project}/rbd-images/{volume}"
    assert writer.post(f"{base}/snapshots", json={"name": snapshot}).status_code == 201
    assert writer.patch(base, json={"size_bytes": 1}).status_code in (400, 409, 422)  # a shrink: refused
    assert writer.delete(f"{base}/snapshots/{snapshot}").status_code == 204
    actor = actor_of(app, writer)
    ours = listed(admin, actor=actor)
    assert [item["target"] for item in ours] == [f"{base}/snapshots/{snapshot}", base, f"{base}/snapshots",
                                                    f"/api/v2/projects/{project}/rbd-images"]
    assert [item["id"] for item in ours] == sorted((item["id"] for item in ours), reverse=True)  # newest first

    def targets(**query) -> list[str]:
        return [item["target"] for item in listed(admin, actor=actor, **query)]

    assert targets(project=project) == [item["target"] for item in ours if item["project"] == project]
    assert targets(outcome="failure") == [base]
    assert targets(action="DELETE /api/v2/projects/<project>/rbd-images/<name>/snapshots/<snapshot>") == [
        f"{base}/snapshots/{snapshot}"]
    # A volume's name: its create (named in the body), and every path under it.
    assert targets(target=volume) == [f"{base}/snapshots/{snapshot}", base, f"{base}/snapshots",
                                      f"/api/v2/projects/{project}/rbd-images"]
    assert targets(target=snapshot) == [f"{base}/snapshots/{snapshot}", f"{base}/snapshots"]
    assert targets(target=created.json["id"]) == targets(target=volume)
    assert listed(admin, target=created.json["id"]) == listed(admin, target=volume, project=project)
    assert len(targets(since=started.isoformat())) == len(ours)
    assert targets(until=started.isoformat()) == []
    middle = next(item for item in ours if item["target"] == base)["at"]
    assert targets(since=middle) == [item["target"] for item in ours if item["at"] >= middle]
    assert targets(since=started.isoformat(), until=middle) == [
        item["target"] for item in ours if item["at"] < middle]
    assert targets(target=unique("never")) == []


@pytest.mark.usefixtures("ceph_conf")  # creates volumes in Ceph
def test_an_id_of_another_tenant_is_as_unknown_as_none(admin, as_role, new_project):
    project, other = new_project(), new_project()
    created = admin.post(f"/api/v2/projects/{other}/cephfs-paths", json={"name": unique("v"), "quota_bytes": MiB})
    assert created.status_code == 201, created.json
    member = as_role("member", project)
    for target in (created.json["id"], "00000000-0000-4000-8000-000000000000"):
        response = member.get(EVENTS, query_string={"target": target})
        assert response.status_code == 404 and response.json["error"]["code"] == "target_not_found"
        assert created.json["name"] not in response.get_data(as_text=True)
    assert listed(admin, target=created.json["id"])[-1]["details"]["request"]["name"] == created.json["name"]


def test_pages_are_disjoint_and_complete(app, admin, as_role, new_project):
    project = new_project()
    writer = as_role("member", project)
    for _ in range(5):
        assert writer.delete(f"/api/v2/projects/{project}/rbd-images/{unique('gone')}").status_code == 404
    actor = actor_of(app, writer)
    whole = listed(admin, actor=actor, limit=1000)
    paged = listed(admin, actor=actor, limit=2)
    assert len(whole) == 5 and paged == whole
    first = admin.get(EVENTS, query_string={"actor": actor, "limit": 2}).json
    assert len(first["items"]) == 2 and first["next_cursor"]


@pytest.mark.parametrize("query, field", [
    ({"outcome": "maybe"}, "outcome"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-01-01T00:00:00"}, "since"),  # no time zone: which day is it?
    ({"until": "2026-13-01T00:00:00Z"}, "until"),
    ({"since": "0001-01-01T00:00:00+05:00"}, "since"),  # before year 1 in UTC
    ({"until": "9999-12-31T23:59:59-05:00"}, "until"),  # after year 9999 in UTC
    ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ({"target": "a/b"}, "target"),
    ({"project": "Not_A_Project"}, "project"),
    ({"actor": "x" * 161}, "actor"),
    ({"limit": 0}, "limit"),
])
def test_bad_filter_values_are_refused(admin, query, field):
    response = admin.get(EVENTS, query_string=query)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_error"
    assert field in response.json["error"]["details"]["fields"]


def test_a_cursor_not_made_by_the_api_is_refused(admin):
    # {"after": "x"}: a name, not an id; {"after": [2**64]}: larger than any id
    for cursor in ("nonsense", "eyJhZnRlciI6ICJ4In0", "eyJhZnRlciI6IFsxODQ0Njc0NDA3MzcwOTU1MTYxNl19"):
        response = admin.get(EVENTS, query_string={"cursor": cursor})
        assert response.status_code == 400 and response.json["error"]["code"] == "invalid_cursor"


def test_times_are_rfc3339_in_any_offset(app, admin, as_role, new_project):
    project = new_project()
    writer = as_role("member", project)
    assert writer.delete(f"/api/v2/projects/{project}/rbd-images/{unique('gone')}").status_code == 404
    actor = actor_of(app, writer)
    [newest] = listed(admin, actor=actor)
    at = datetime.fromisoformat(newest["at"])
    assert at.utcoffset() == timedelta(0)
    east = (at - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=5)))
    assert newest in listed(admin, actor=actor, since=east.isoformat())
    assert newest in listed(admin, actor=actor, since=(at - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def test_any_body_or_path_is_still_audited_and_found(app, admin, as_role, new_project):
    """The target filter's indexes must never refuse an audit row: a name holding a NUL (which PostgreSQL's json
    keeps and its text cannot), a name that is an object, a path segment longer than an index entry may be."""
    project = new_project()
    writer = as_role("member", project)
    collection = f"/api/v2/projects/{project}/rbd-images"
    sent = [writer.post(collection, json={"name": "a\u0000b", "size_bytes": MiB}),
            writer.post(collection, json={"name": {"\u0000": ["x" * 200] * 30}, "size_bytes": MiB}),
            writer.delete(f"{collection}/{'x' * 3000}")]
    assert [response.status_code for response in sent] == [422, 422, 404]
    events = listed(admin, actor=actor_of(app, writer))
    assert [event["target"] for event in events] == [f"{collection}/{'x' * 3000}", collection, collection]
    assert listed(admin, actor=actor_of(app, writer), target="x" * 128) == []  # names are up to 128 characters
