"""Error codes and reads no other test reached: each refusal with its status and stable code, and nothing
changed by it in Ceph or in the database; the trash listing of CephFS paths and the reads of CephFS snapshots."""
from __future__ import annotations

import os

import pytest
import rbd
from sqlalchemy import select, update

from robin.clusters.models import CephCluster
from robin.db import db
from robin.projects.models import Project, Quota
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import RbdImage
from tests.conftest import cephfs_exists, unique

pytestmark = pytest.mark.integration
MiB = 2**20


def refused(response, status: int, code: str) -> dict:
    assert (response.status_code, response.json["error"]["code"]) == (status, code), response.json
    assert response.json["error"]["message"]
    return response.json["error"]


def quota_row(db_rows, project: str) -> tuple:
    [quota] = db_rows(select(Quota).join(Project).where(Project.name == project))
    return quota.max_bytes, quota.max_volumes, quota.max_snapshots


def clusters(db_rows) -> list[tuple]:
    rows = db_rows(select(CephCluster).order_by(CephCluster.name))
    return [(row.name, row.conf_path, row.is_default) for row in rows]


# --- projects --------------------------------------------------------------------------------------

def test_a_quota_below_what_the_project_uses_is_refused(admin, new_project, db_rows):
    project = new_project(max_bytes=2**30, max_volumes=10, max_snapshots=10)
    image = unique("img")
    assert admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": image, "size_bytes": 64 * MiB}
                      ).status_code == 201
    assert admin.post(f"/api/v2/projects/{project}/rbd-images/{image}/snapshots", json={"name": "s"}
                      ).status_code == 201
    before = quota_row(db_rows, project)
    for below in ({"max_bytes": 32 * MiB}, {"max_volumes": 0}, {"max_snapshots": 0}):
        error = refused(admin.patch(f"/api/v2/projects/{project}", json={"quota": below}), 409, "quota_below_usage")
        assert error["details"] == {"provisioned_bytes": 64 * MiB, "volumes": 1, "snapshots": 1}
        assert quota_row(db_rows, project) == before
    # exactly what it uses is accepted
    exact = {"max_bytes": 64 * MiB, "max_volumes": 1, "max_snapshots": 1}
    assert admin.patch(f"/api/v2/projects/{project}", json={"quota": exact}).status_code == 200
    assert quota_row(db_rows, project) == (64 * MiB, 1, 1)


# --- clusters --------------------------------------------------------------------------------------

@pytest.fixture()
def alias(admin, ceph_conf):
    """A second registration of the session's own cluster, unregistered after the test."""
    name = unique("alias")
    assert admin.post("/api/v2/clusters", json={"name": name, "conf_path": ceph_conf}).status_code == 201
    yield name
    assert admin.delete(f"/api/v2/clusters/{name}").status_code == 204


def test_a_cluster_registered_twice_is_refused(admin, alias, db_rows):
    before = clusters(db_rows)
    refused(admin.post("/api/v2/clusters", json={"name": alias, "conf_path": "/etc/hostname"}), 409, "cluster_exists")
    assert clusters(db_rows) == before


def test_the_default_cluster_cannot_be_unregistered(admin, db_rows):
    before = clusters(db_rows)
    refused(admin.delete("/api/v2/clusters/default"), 409, "cluster_is_default")
    assert clusters(db_rows) == before
    assert admin.get("/api/v2/clusters/default").status_code == 200


def test_a_cluster_with_volumes_cannot_be_unregistered(admin, alias, new_project, rbd_ioctx, db_rows):
    project, image = new_project(), unique("img")
    created = admin.post(f"/api/v2/projects/{project}/rbd-images",
                         json={"name": image, "size_bytes": 8 * MiB, "cluster": alias})
    assert created.status_code == 201, created.json
    before = clusters(db_rows)
    refused(admin.delete(f"/api/v2/clusters/{alias}"), 409, "cluster_in_use")
    assert clusters(db_rows) == before
    assert admin.get(f"/api/v2/projects/{project}/rbd-images/{image}").json["state"] == "available"
    with rbd.Image(rbd_ioctx, image, read_only=True) as handle:
        assert handle.size() == 8 * MiB
    # Once the project and its volume rows are gone, the cluster is free (the fixture unregisters it).
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{image}",
                        query_string={"purge": "true"}).status_code == 204
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


# --- snapshots -------------------------------------------------------------------------------------

def test_a_snapshot_that_is_not_available_cannot_be_rolled_back_to(app, admin, new_project, rbd_ioctx, db_rows):
    """As a snapshot whose delete is under way (or was cut short) is: robin's row says `deleting`."""
    project, image = new_project(), unique("img")
    url = f"/api/v2/projects/{project}/rbd-images/{image}"
    assert admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": image, "size_bytes": 8 * MiB}
                      ).status_code == 201
    assert admin.post(f"{url}/snapshots", json={"name": "s"}).status_code == 201
    with rbd.Image(rbd_ioctx, image) as handle:
        handle.write(b"after", 0)
    [snapshot] = db_rows(select(Snapshot).join(RbdImage).where(RbdImage.name == image))
    _set_snapshot_state(snapshot.id, SnapshotState.DELETING)
    error = refused(admin.post(f"{url}/snapshots/s/rollback"), 409, "snapshot_busy")
    assert error["details"] == {"state": "deleting"}
    assert admin.get(url).json["state"] == "available"
    with rbd.Image(rbd_ioctx, image, read_only=True) as handle:
        assert handle.read(0, 5) == b"after" and [snap["name"] for snap in handle.list_snaps()] == ["s"]
    _set_snapshot_state(snapshot.id, SnapshotState.AVAILABLE)
    assert admin.post(f"{url}/snapshots/s/rollback").status_code == 200


@pytest.mark.parametrize("source", [{"snapshot": "s"}, {}], ids=["of-a-snapshot", "of-the-image-now"])
def test_a_clone_under_a_taken_name_is_409_and_changes_nothing(admin, new_project, rbd_ioctx, db_rows, source):
    project, parent, taken = new_project(), unique("img"), unique("taken")
    url = f"/api/v2/projects/{project}/rbd-images"
    for name in (parent, taken):
        assert admin.post(url, json={"name": name, "size_bytes": 8 * MiB}).status_code == 201
    assert admin.post(f"{url}/{parent}/snapshots", json={"name": "s"}).status_code == 201
    rows_before = db_rows(select(RbdImage.id).where(RbdImage.project.has(Project.name == project)))
    usage_before = admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"]
    error = refused(admin.post(url, json={"name": taken, "source": {"image": parent, **source}}), 409, "name_taken")
    assert error["details"] == {"name": taken, "cluster": "default"}
    assert db_rows(select(RbdImage.id).where(RbdImage.project.has(Project.name == project))) == rows_before
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == usage_before
    with rbd.Image(rbd_ioctx, parent, read_only=True) as image:
        assert [snap["name"] for snap in image.list_snaps()] == ["s"]  # no temporary snapshot left
    with rbd.Image(rbd_ioctx, taken, read_only=True) as image:
        assert image.size() == 8 * MiB
        with pytest.raises(rbd.ImageNotFound):
            image.parent_info()  # still a clone of nothing


def _set_snapshot_state(snapshot_id: str, state: SnapshotState) -> None:
    with db.writing() as connection:
        connection.execute(update(Snapshot).where(Snapshot.id == snapshot_id).values(state=state))


# --- CephFS reads ----------------------------------------------------------------------------------

def test_cephfs_snapshots_are_read_one_by_one_and_listed(admin, new_project, fs, settings):
    project, name = new_project(), unique("dir")
    url = f"/api/v2/projects/{project}/cephfs-paths/{name}"
    assert admin.post(f"/api/v2/projects/{project}/cephfs-paths", json={"name": name, "quota_bytes": 8 * MiB}
                      ).status_code == 201
    taken = [admin.post(f"{url}/snapshots", json={"name": snap}).json for snap in ("a", "b")]
    path = f"{settings.cephfs_root}/{project}/{name}"
    assert cephfs_exists(fs, f"{path}/.snap/a") and cephfs_exists(fs, f"{path}/.snap/b")
    one = admin.get(f"{url}/snapshots/b")
    assert one.status_code == 200 and one.json == taken[1]
    assert one.json["volume"] == name and one.json["state"] == "available" and one.json["size_bytes"] == 8 * MiB
    listed = admin.get(f"{url}/snapshots").json
    assert listed["items"] == taken and listed["next_cursor"] is None
    refused(admin.get(f"{url}/snapshots/nope"), 404, "snapshot_not_found")


def test_trashed_cephfs_paths_are_listed_apart(admin, new_project, fs, settings):
    project = new_project()
    url = f"/api/v2/projects/{project}/cephfs-paths"
    kept, trashed = unique("kept"), unique("gone")
    for name in (kept, trashed):
        assert admin.post(url, json={"name": name, "quota_bytes": 8 * MiB}).status_code == 201
    assert admin.delete(f"{url}/{trashed}").status_code == 204
    live = admin.get(url).json["items"]
    in_trash = admin.get(url, query_string={"trashed": "true"}).json["items"]
    assert [item["name"] for item in live] == [kept]
    assert [item["name"] for item in in_trash] == [trashed]
    assert in_trash[0]["state"] == "deleted" and in_trash[0]["purge_after"] and in_trash[0]["deleted_at"]
    assert not cephfs_exists(fs, f"{settings.cephfs_root}/{project}/{trashed}")
    assert admin.post(f"{url}/{trashed}/restore").status_code == 200
    assert admin.get(url, query_string={"trashed": "true"}).json["items"] == []
    assert os.path.basename(in_trash[0]["path"]) == trashed
