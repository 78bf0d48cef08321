"""Snapshots of RBD images and CephFS paths, and RBD rollback, checked in Ceph itself."""
from __future__ import annotations

import cephfs
import jsonschema
import pytest
import rbd
from sqlalchemy import select

from robin.snapshots.models import Snapshot, SnapshotState
from robin.snapshots.schemas import SnapshotSchema
from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB = 2**20



@pytest.fixture()
def project(new_project):
    return new_project(max_snapshots=3)


def new_volume(admin, project, collection):
    body = {"name": unique("v")}
    body |= {"size_bytes": 64 * MiB} if collection == "rbd-images" else {"quota_bytes": 64 * MiB}
    response = admin.post(f"/api/v2/projects/{project}/{collection}", json=body)
    assert response.status_code == 201, response.json
    return response.json


def rbd_snaps(ioctx, name) -> set[str]:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return {snap["name"] for snap in image.list_snaps()}


def cephfs_snaps(fs, path) -> set[str]:
    handle = fs.opendir(f"{path}/.snap")
    names = set()
    while (entry := fs.readdir(handle)) is not None:
        names.add(entry.d_name.decode())
    fs.closedir(handle)
    return names - {".", ".."}


def write_file(fs, path: str, data: bytes) -> None:
    handle = fs.open(path, "w", 0o644)
    fs.write(handle, data, 0)
    fs.close(handle)


def read_file(fs, path: str) -> bytes:
    handle = fs.open(path, "r", 0)
    data = fs.read(handle, 0, 1 << 20)
    fs.close(handle)
    return data


def test_rbd_snapshot_lifecycle(admin, project, rbd_ioctx, db_rows):
    image = new_volume(admin, project, "rbd-images")
    base = f"/api/v2/projects/{project}/rbd-images/{image['name']}/snapshots"
    created = admin.post(base, json={"name": "before-upgrade"})
    assert created.status_code == 201, created.json
    assert created.json["state"] == "available" and created.json["size_bytes"] == 64 * MiB
    assert rbd_snaps(rbd_ioctx, image["name"]) == {"before-upgrade"}
    assert [s["name"] for s in admin.get(base).json["items"]] == ["before-upgrade"]
    assert admin.get(f"{base}/before-upgrade").json["volume"] == image["name"]
    assert admin.post(base, json={"name": "before-upgrade"}).json["error"]["code"] == "snapshot_exists"
    assert admin.delete(f"{base}/before-upgrade").status_code == 204
    assert rbd_snaps(rbd_ioctx, image["name"]) == set()
    [row] = db_rows(select(Snapshot).where(Snapshot.rbd_image_id == image["id"]))
    assert row.state is SnapshotState.DELETED and row.deleted_at is not None
    assert admin.get(f"{base}/before-upgrade").status_code == 404


def documented_answer(admin, path: str, method: str, status: str) -> dict:
    """The JSON schema of an operation's answer in robin's OpenAPI document, its references resolvable."""
    spec = admin.get("/api/v2/openapi.json").json
    schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return {**schema, "components": spec["components"]}


@pytest.mark.parametrize("collection", ["rbd-images", "cephfs-paths"])
def test_a_snapshots_answer_is_what_its_schema_writes(admin, project, collection, db_rows, rbd_ioctx, fs):
    """The create's answer is written without marshmallow: exactly what SnapshotSchema writes of the row, and
    valid against the OpenAPI document."""
    volume = new_volume(admin, project, collection)
    created = admin.post(f"/api/v2/projects/{project}/{collection}/{volume['name']}/snapshots", json={"name": "s1"})
    assert created.status_code == 201, created.json
    [row] = db_rows(select(Snapshot).where(Snapshot.id == created.json["id"]))
    assert created.json == SnapshotSchema().dump(row)
    assert created.json["volume"] == volume["name"] and created.json["state"] == "available"
    schema = documented_answer(admin, f"/api/v2/projects/{{project}}/{collection}/{{name}}/snapshots", "post", "201")
    jsonschema.validate(created.json, schema)


def test_cephfs_snapshot_keeps_the_old_content(admin, project, fs):
    volume = new_volume(admin, project, "cephfs-paths")
    path = volume["path"]
    write_file(fs, f"{path}/config", b"version 1")
    base = f"/api/v2/projects/{project}/cephfs-paths/{volume['name']}/snapshots"
    assert admin.post(base, json={"name": "v1"}).status_code == 201
    write_file(fs, f"{path}/config", b"version 2, longer")
    assert cephfs_snaps(fs, path) == {"v1"}
    assert read_file(fs, f"{path}/.snap/v1/config") == b"version 1"
    assert admin.delete(f"{base}/v1").status_code == 204
    assert cephfs_snaps(fs, path) == set()


def test_snapshots_count_against_max_snapshots(admin, project, rbd_ioctx):
    image = new_volume(admin, project, "rbd-images")
    path = new_volume(admin, project, "cephfs-paths")
    rbd_base = f"/api/v2/projects/{project}/rbd-images/{image['name']}/snapshots"
    fs_base = f"/api/v2/projects/{project}/cephfs-paths/{path['name']}/snapshots"
    for name in ("a", "b"):
        assert admin.post(rbd_base, json={"name": name}).status_code == 201
    assert admin.post(fs_base, json={"name": "c"}).status_code == 201
    refused = admin.post(rbd_base, json={"name": "d"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "quota_exceeded"
    assert refused.json["error"]["details"]["remaining_snapshots"] == 0
    assert rbd_snaps(rbd_ioctx, image["name"]) == {"a", "b"}
    assert admin.delete(f"{rbd_base}/a").status_code == 204
    assert admin.post(rbd_base, json={"name": "d"}).status_code == 201


@pytest.mark.parametrize("collection", ["rbd-images", "cephfs-paths"])
def test_deleting_a_volume_with_snapshots(admin, project, collection, rbd_ioctx, fs):
    volume = new_volume(admin, project, collection)
    url = f"/api/v2/projects/{project}/{collection}/{volume['name']}"
    assert admin.post(f"{url}/snapshots", json={"name": "keep"}).status_code == 201
    refused = admin.delete(url)
    assert refused.status_code == 409 and refused.json["error"]["code"] == "volume_has_snapshots"
    assert refused.json["error"]["details"]["snapshots"] == ["keep"]
    assert admin.get(url).json["state"] == "available"
    assert admin.delete(url, query_string={"with_snapshots": "true"}).status_code == 204
    if collection == "rbd-images":
        assert volume["name"] not in rbd.RBD().list(rbd_ioctx)
    else:
        with pytest.raises(cephfs.ObjectNotFound):
            fs.stat(volume["path"])
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 0


def test_rbd_rollback_restores_the_data(admin, project, rbd_ioctx):
    image = new_volume(admin, project, "rbd-images")
    name = image["name"]
    with rbd.Image(rbd_ioctx, name) as handle:
        handle.write(b"old data", 0)
    base = f"/api/v2/projects/{project}/rbd-images/{name}/snapshots"
    assert admin.post(base, json={"name": "good"}).status_code == 201
    with rbd.Image(rbd_ioctx, name) as handle:
        handle.write(b"NEW DATA", 0)
    response = admin.post(f"{base}/good/rollback")
    assert response.status_code == 200, response.json
    with rbd.Image(rbd_ioctx, name, read_only=True) as handle:
        assert handle.read(0, 8) == b"old data"


def test_rbd_rollback_refused_while_in_use(admin, project, rbd_ioctx):
    image = new_volume(admin, project, "rbd-images")
    base = f"/api/v2/projects/{project}/rbd-images/{image['name']}/snapshots"
    assert admin.post(base, json={"name": "s"}).status_code == 201
    with rbd.Image(rbd_ioctx, image["name"]) as handle:
        handle.write(b"in use", 0)  # an open, written image: a watcher and the exclusive lock
        response = admin.post(f"{base}/s/rollback")
        assert response.status_code == 409 and response.json["error"]["code"] == "volume_in_use"
        assert response.json["error"]["details"]["users"]
        assert handle.read(0, 6) == b"in use"


def test_cephfs_rollback_is_refused_with_a_way_out(admin, project, fs):
    volume = new_volume(admin, project, "cephfs-paths")
    base = f"/api/v2/projects/{project}/cephfs-paths/{volume['name']}/snapshots"
    assert admin.post(base, json={"name": "s"}).status_code == 201
    response = admin.post(f"{base}/s/rollback")
    assert response.status_code == 400 and response.json["error"]["code"] == "rollback_not_supported"
    assert ".snap/s" in response.json["error"]["message"]
    assert cephfs_snaps(fs, volume["path"]) == {"s"}
    assert admin.get(f"{base}/s").json["state"] == "available"


def test_bad_snapshot_names_and_missing_volumes(admin, project, rbd_ioctx, db_rows):
    image = new_volume(admin, project, "rbd-images")
    base = f"/api/v2/projects/{project}/rbd-images/{image['name']}/snapshots"
    for body in ({"name": "a@b"}, {"name": "ok", "extra": 1}):
        response = admin.post(base, json=body)
        assert response.status_code == 422 and response.json["error"]["code"] == "validation_error"
    reserved = admin.post(base, json={"name": "robin-clone-mine"})  # the reconciler would remove it
    assert reserved.status_code == 422 and "reserved" in reserved.json["error"]["details"]["fields"]["name"][0]
    missing = admin.post(f"/api/v2/projects/{project}/rbd-images/nope/snapshots", json={"name": "s"})
    assert missing.status_code == 404 and missing.json["error"]["code"] == "volume_not_found"
    assert_no_snapshot_taken(admin, project, image, rbd_ioctx, db_rows)


def assert_no_snapshot_taken(admin, project, image, rbd_ioctx, db_rows) -> None:
    assert rbd_snaps(rbd_ioctx, image["name"]) == set()
    assert db_rows(select(Snapshot).where(Snapshot.project_id == _project_id(db_rows, project))) == []
    assert admin.get(f"/api/v2/projects/{project}/rbd-images/{image['name']}/snapshots").json["items"] == []


def _project_id(db_rows, project: str) -> int:
    from robin.projects.models import Project

    [found] = db_rows(select(Project.id).where(Project.name == project))
    return found


def test_auditor_cannot_snapshot(as_role, admin, project, rbd_ioctx, db_rows):
    image = new_volume(admin, project, "rbd-images")
    auditor = as_role("auditor")
    base = f"/api/v2/projects/{project}/rbd-images/{image['name']}/snapshots"
    response = auditor.post(base, json={"name": "s"})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert_no_snapshot_taken(admin, project, image, rbd_ioctx, db_rows)
    assert auditor.get(base).status_code == 200


def test_rollback_takes_the_snapshots_size_with_its_quota(admin, new_project, rbd_ioctx, db_rows):
    from robin.volumes.models import RbdImage

    project = new_project(max_bytes=256 * MiB)
    name = unique("v")
    url = f"/api/v2/projects/{project}/rbd-images/{name}"
    assert admin.post(f"/api/v2/projects/{project}/rbd-images",
                      json={"name": name, "size_bytes": 128 * MiB}).status_code == 201
    assert admin.post(f"{url}/snapshots", json={"name": "big"}).status_code == 201
    assert admin.patch(url, json={"size_bytes": 64 * MiB, "allow_shrink": True}).status_code == 200
    # Meanwhile the freed quota is used elsewhere: rolling back to 128 MiB would exceed it.
    other = unique("v")
    assert admin.post(f"/api/v2/projects/{project}/rbd-images",
                      json={"name": other, "size_bytes": 192 * MiB}).status_code == 201
    refused = admin.post(f"{url}/snapshots/big/rollback")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "quota_exceeded"
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{other}").status_code == 204
    assert admin.post(f"{url}/snapshots/big/rollback").status_code == 200
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == 128 * MiB
    [row] = db_rows(select(RbdImage).where(RbdImage.name == name))
    assert row.size_bytes == 128 * MiB and row.state.value == "available" and row.target_size_bytes is None
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 128 * MiB
