"""What one read request costs the database, its token cached: a page of a project's volumes is one statement in
one transaction (the project is found by name within it), however many items it holds; only an empty page asks
again whether the project exists. A change that adds a round trip to these paths fails here."""
from __future__ import annotations

import pytest

from tests.conftest import Api, make_token, unique
from tests.support.costs import counting

pytestmark = pytest.mark.integration
GiB = 2**30


def get_counted(api, path: str, status: int = 200, **query):
    api.get(path, query_string=query)  # the token's row cached, as on every request but a token's first
    with counting(cold_tokens=False) as counted:
        response = api.get(path, query_string=query)
    assert response.status_code == status, response.json
    return response, counted


@pytest.fixture()
def images(admin, new_project) -> tuple[str, list[str]]:
    project = new_project(max_bytes=100 * GiB)
    names = sorted(unique("img") for _ in range(3))
    for name in names:
        created = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": GiB})
        assert created.status_code == 201, created.json
    return project, names


def test_a_page_of_volumes_is_one_statement_whatever_its_size(admin, images):
    project, names = images
    path = f"/api/v2/projects/{project}/rbd-images"
    for limit in (1, 3):
        response, counted = get_counted(admin, path, limit=limit)
        assert [item["name"] for item in response.json["items"]] == names[:limit]
        assert (len(counted.statements), counted.transactions) == (1, 1), counted.statements
    cursor = get_counted(admin, path, limit=1)[0].json["next_cursor"]
    response, counted = get_counted(admin, path, limit=1, cursor=cursor)
    assert [item["name"] for item in response.json["items"]] == names[1:2]
    assert len(counted.statements) == 1, counted.statements


def test_an_empty_page_asks_whether_the_project_exists(admin, images, new_project):
    empty = new_project()
    response, counted = get_counted(admin, f"/api/v2/projects/{empty}/rbd-images")
    assert response.json == {"items": [], "next_cursor": None}
    assert len(counted.statements) == 2, counted.statements
    response, counted = get_counted(admin, f"/api/v2/projects/{unique('none')}/cephfs-paths", status=404)
    assert response.json["error"]["code"] == "project_not_found"
    assert len(counted.statements) == 2, counted.statements


def test_a_member_of_another_project_is_refused_before_any_statement(app, images, new_project):
    project, _ = images
    stranger = Api(app.test_client(), make_token(app, "member", new_project()))
    response, counted = get_counted(stranger, f"/api/v2/projects/{project}/rbd-images", status=403)
    assert counted.statements == []


def test_one_volume_and_one_project_are_one_statement_each(admin, images):
    project, names = images
    response, counted = get_counted(admin, f"/api/v2/projects/{project}/rbd-images/{names[0]}")
    assert response.json["name"] == names[0]
    assert len(counted.statements) == 1, counted.statements
    response, counted = get_counted(admin, f"/api/v2/projects/{project}")
    assert response.json["name"] == project
    assert len(counted.statements) == 1, counted.statements
