"""`GET /api/v2/snapshots`: the snapshots of every volume a token sees, in one paginated listing."""
from __future__ import annotations

import pytest

from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB = 2**20
LISTING = "/api/v2/snapshots"


def new_volume(admin, project, collection) -> str:
    body = {"name": unique("v")}
    body |= {"size_bytes": 64 * MiB} if collection == "rbd-images" else {"quota_bytes": 64 * MiB}
    response = admin.post(f"/api/v2/projects/{project}/{collection}", json=body)
    assert response.status_code == 201, response.json
    return body["name"]


def snapshot(admin, project, collection, volume, name) -> dict:
    response = admin.post(f"/api/v2/projects/{project}/{collection}/{volume}/snapshots", json={"name": name})
    assert response.status_code == 201, response.json
    return response.json


def every_page(client, limit, **params) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        page = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        response = client.get(LISTING, query_string={**params, **page})
        assert response.status_code == 200, response.json
        pages.append(response.json["items"])
        cursor = response.json["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture()
def two_projects(admin, new_project):
    """Two projects, each with an RBD image with two snapshots and a CephFS path with one."""
    made = {}
    for project in (new_project(), new_project()):
        image, path = new_volume(admin, project, "rbd-images"), new_volume(admin, project, "cephfs-paths")
        made[project] = [snapshot(admin, project, "rbd-images", image, "daily"),
                         snapshot(admin, project, "rbd-images", image, "weekly"),
                         snapshot(admin, project, "cephfs-paths", path, "daily")]
    return made


def test_pages_list_every_snapshot_of_a_project_once(admin, two_projects):
    project, made = next(iter(two_projects.items()))
    pages = every_page(admin, 2, project=project)
    assert [len(page) for page in pages] == [2, 1]
    items = [item for page in pages for item in page]
    assert sorted(item["id"] for item in items) == sorted(s["id"] for s in made)
    by_id = {item["id"]: item for item in items}
    for taken in made:
        listed = by_id[taken["id"]]
        assert listed["project"] == project and listed["volume"] == taken["volume"]
        assert {k: listed[k] for k in ("name", "size_bytes", "state", "created_at")} == \
               {k: taken[k] for k in ("name", "size_bytes", "state", "created_at")}
    assert sorted(item["volume_kind"] for item in items) == ["cephfs", "rbd", "rbd"]


def test_admin_lists_across_projects_and_filters_by_name(admin, two_projects):
    ids = {s["id"] for made in two_projects.values() for s in made}
    listed = [item for page in every_page(admin, 1000) for item in page]
    assert ids <= {item["id"] for item in listed}
    assert len(listed) == len({item["id"] for item in listed})
    weekly = [item for page in every_page(admin, 1000, name="weekly") for item in page]
    assert {item["project"] for item in weekly} >= set(two_projects)
    assert {item["name"] for item in weekly} == {"weekly"}
    both = [item for page in every_page(admin, 1000, name=["weekly", "daily"], project=next(iter(two_projects)))
            for item in page]
    assert len(both) == 3


def test_deleted_snapshots_and_volumes_are_not_listed(admin, new_project):
    project = new_project()
    kept, gone = new_volume(admin, project, "rbd-images"), new_volume(admin, project, "rbd-images")
    base = f"/api/v2/projects/{project}/rbd-images"
    snapshot(admin, project, "rbd-images", kept, "a")
    snapshot(admin, project, "rbd-images", kept, "b")
    snapshot(admin, project, "rbd-images", gone, "c")
    assert admin.delete(f"{base}/{kept}/snapshots/b").status_code == 204
    response = admin.delete(f"{base}/{gone}", query_string={"with_snapshots": "true"})
    assert response.status_code == 204, response.json
    [item] = every_page(admin, 100, project=project)[0]
    assert (item["volume"], item["name"]) == (kept, "a")


def test_state_filter(admin, new_project):
    project = new_project()
    volume = new_volume(admin, project, "cephfs-paths")
    snapshot(admin, project, "cephfs-paths", volume, "s")
    assert len(every_page(admin, 10, project=project, state="available")[0]) == 1
    assert every_page(admin, 10, project=project, state="creating") == [[]]


def test_a_member_sees_only_its_project(as_role, admin, two_projects):
    mine, theirs = list(two_projects)
    member = as_role("member", mine)
    listed = [item for page in every_page(member, 1000) for item in page]
    assert {item["project"] for item in listed} == {mine}
    assert sorted(item["id"] for item in listed) == sorted(s["id"] for s in two_projects[mine])
    response = member.get(LISTING, query_string={"project": theirs})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    auditor = as_role("auditor")
    assert {item["project"] for page in every_page(auditor, 1000) for item in page} >= set(two_projects)
    assert as_role("metrics").get(LISTING).status_code == 403


def test_bad_arguments_are_refused(admin, new_project):
    response = admin.get(LISTING, query_string={"cursor": "not-a-cursor"})
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_cursor"
    for params in ({"state": "deleted"}, {"name": [f"n{i}" for i in range(11)]}, {"name": "a/b"},
                   {"project": "Not_A_Project"}, {"limit": 0}):
        response = admin.get(LISTING, query_string=params)
        assert response.status_code == 422, (params, response.json)
    response = admin.get(LISTING, query_string={"project": unique("missing")})
    assert response.status_code == 404 and response.json["error"]["code"] == "project_not_found"


def test_documented_in_openapi(admin):
    spec = admin.get("/api/v2/openapi.json").json
    operation = spec["paths"][LISTING]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"project", "name", "state", "limit", "cursor"}
