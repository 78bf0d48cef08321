"""CephFS paths through the API, checked in CephFS itself (directories, quota xattrs) and in the database."""
from __future__ import annotations

import errno
import os

import cephfs
import pytest
from sqlalchemy import select

from robin.ceph import CephConnection, cephfs_ops
from robin.ceph.cephfs_ops import OWNER_XATTR
from robin.volumes.models import CephfsPath, VolumeState
from tests.conftest import cephfs_exists as exists
from tests.conftest import unique
from tests.support.net import wait_until

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30



def xattr(fs, path, name) -> str | None:
    try:
        return fs.getxattr(path, name).decode()
    except cephfs.NoData:
        return None



def rows(db_rows, name):
    return db_rows(select(CephfsPath).where(CephfsPath.name == name))


@pytest.fixture()
def project(new_project):
    return new_project(max_bytes=10 * GiB, max_volumes=20)


def create(client, project, **body):
    body.setdefault("name", unique("fs"))
    body.setdefault("quota_bytes", 64 * MiB)
    return client.post(f"/api/v2/projects/{project}/cephfs-paths", json=body)


def test_create_makes_the_directory_with_its_quota(admin, project, fs, db_rows):
    response = create(admin, project, quota_bytes=100 * MiB)
    assert response.status_code == 201, response.json
    body = response.json
    path = f"/robin/{project}/{body['name']}"
    assert body["path"] == path and body["fs"] == "cephfs" and body["quota_bytes"] == 100 * MiB
    assert body["state"] == "available" and body["provisioned_bytes"] == 100 * MiB
    assert exists(fs, path)
    assert xattr(fs, path, "ceph.quota.max_bytes") == str(100 * MiB)
    assert xattr(fs, path, OWNER_XATTR) == body["id"]
    [row] = rows(db_rows, body["name"])
    assert row.state is VolumeState.AVAILABLE and row.size_bytes == 100 * MiB and row.path == path


def test_get_list_and_used_bytes(admin, project, fs):
    name = create(admin, project).json["name"]
    path = f"/robin/{project}/{name}"
    handle = fs.open(f"{path}/data", "w", 0o644)
    fs.write(handle, b"z" * MiB, 0)
    fs.close(handle)
    url = f"/api/v2/projects/{project}/cephfs-paths/{name}"

    def used() -> int:
        return admin.get(url, query_string={"with_used": "true"}).json["used_bytes"]

    wait_until(lambda: used() == MiB, timeout=30, what="ceph.dir.rbytes to count the file")
    assert [item["name"] for item in admin.get(f"/api/v2/projects/{project}/cephfs-paths").json["items"]] == [name]
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 64 * MiB


def test_quota_patch_both_ways(admin, project, fs, db_rows):
    name = create(admin, project, quota_bytes=64 * MiB).json["name"]
    path, url = f"/robin/{project}/{name}", f"/api/v2/projects/{project}/cephfs-paths/{name}"
    assert admin.patch(url, json={"quota_bytes": 256 * MiB}).json["quota_bytes"] == 256 * MiB
    assert xattr(fs, path, "ceph.quota.max_bytes") == str(256 * MiB)
    # Lowering a quota deletes nothing, so it needs no allow_shrink.
    assert admin.patch(url, json={"quota_bytes": 32 * MiB}).json["quota_bytes"] == 32 * MiB
    assert xattr(fs, path, "ceph.quota.max_bytes") == str(32 * MiB)
    [row] = rows(db_rows, name)
    assert row.size_bytes == 32 * MiB and row.target_size_bytes is None


def test_rbd_and_cephfs_share_the_project_quota(admin, new_project, fs):
    project = new_project(max_bytes=GiB, max_volumes=10)
    assert admin.post(f"/api/v2/projects/{project}/rbd-images",
                      json={"name": unique("img"), "size_bytes": 768 * MiB}).status_code == 201
    name = unique("fs")
    refused = create(admin, project, name=name, quota_bytes=512 * MiB)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "quota_exceeded"
    assert refused.json["error"]["details"]["remaining_bytes"] == 256 * MiB
    assert not exists(fs, f"/robin/{project}/{name}")
    assert create(admin, project, quota_bytes=256 * MiB).status_code == 201
    usage = admin.get(f"/api/v2/projects/{project}/usage").json
    assert usage["provisioned_bytes"] == GiB and usage["volumes"] == 2 and usage["remaining_bytes"] == 0


def test_delete_removes_the_tree(admin, project, fs, db_rows):
    name = create(admin, project).json["name"]
    path = f"/robin/{project}/{name}"
    fs.mkdirs(f"{path}/a/b", 0o755)
    handle = fs.open(f"{path}/a/b/file", "w", 0o644)
    fs.write(handle, b"data", 0)
    fs.close(handle)
    fs.symlink("a/b/file", f"{path}/link")
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{name}").status_code == 204
    assert not exists(fs, path)
    [row] = rows(db_rows, name)
    assert row.state is VolumeState.DELETED
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0


def test_names_are_unique_per_file_system_across_projects(admin, project, new_project):
    name = create(admin, project).json["name"]
    taken = create(admin, new_project(), name=name)
    assert taken.status_code == 409 and taken.json["error"]["code"] == "name_taken"


def test_foreign_directory_is_never_taken_over(admin, project, fs, db_rows):
    name = unique("foreign")
    path = f"/robin/{project}/{name}"
    fs.mkdirs(path, 0o755)
    response = create(admin, project, name=name)
    assert response.status_code == 409 and response.json["error"]["code"] == "name_taken"
    assert exists(fs, path) and xattr(fs, path, OWNER_XATTR) is None
    assert rows(db_rows, name) == []
    fs.rmdir(path)


@pytest.mark.parametrize("override, field", [
    ({"quota_bytes": 0}, "quota_bytes"),
    ({"quota_bytes": -5}, "quota_bytes"),
    ({"quota_bytes": "1"}, "quota_bytes"),
    ({"quota_bytes": 2**51}, "quota_bytes"),
    ({"name": "a/b"}, "name"),
    ({"name": ".."}, "name"),
    ({"fs": "otherfs"}, "fs"),
    ({"size_bytes": MiB}, "size_bytes"),
])
def test_bad_input_is_422_and_creates_nothing(admin, project, fs, override, field):
    body = {"name": unique("bad"), "quota_bytes": MiB} | override
    response = admin.post(f"/api/v2/projects/{project}/cephfs-paths", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 0
    assert not exists(fs, f"/robin/{project}")  # not even the project's directory


def test_member_of_another_project_is_refused(as_role, admin, project, new_project, fs, db_rows):
    outsider, name = as_role("member", new_project()), unique("fs")
    response = create(outsider, project, name=name)
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert not exists(fs, f"/robin/{project}")  # not even the project's directory
    assert rows(db_rows, name) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 0


def test_errno_of_quota_enforced_by_ceph(admin, project, fs):
    """The quota robin sets is the one CephFS enforces."""
    name = create(admin, project, quota_bytes=4 * MiB).json["name"]
    path = f"/robin/{project}/{name}"
    handle = fs.open(f"{path}/big", "w", 0o644)
    try:
        with pytest.raises(cephfs.Error) as caught:
            for block in range(16):
                fs.write(handle, b"q" * MiB, block * MiB)
                fs.fsync(handle, 0)
        assert caught.value.errno in (errno.EDQUOT, -errno.EDQUOT)
    finally:
        fs.close(handle)


def test_a_ceph_fuse_mount_sees_the_quota_as_its_size(admin, project, ceph_conf):
    from tests.support.mounts import ceph_fuse

    body = create(admin, project, quota_bytes=256 * MiB).json
    with ceph_fuse(ceph_conf, body["path"]) as mountpoint:
        stats = os.statvfs(mountpoint)
        assert stats.f_blocks * stats.f_frsize == 256 * MiB
        with open(os.path.join(mountpoint, "hello"), "wb") as handle:
            handle.write(b"h" * 3 * MiB)
    url = f"/api/v2/projects/{project}/cephfs-paths/{body['name']}"
    wait_until(lambda: admin.get(url, query_string={"with_used": "true"}).json["used_bytes"] == 3 * MiB,
               timeout=30, what="the written file to show in used_bytes")


def test_create_and_trash_make_missing_parents_and_are_idempotent(ceph_conf, fs):
    """The project's and the trash's directories are made only when missing (an mkdir or rename finds them so):
    in a fresh tree both calls make them, and a rerun of either is a success."""
    conn = CephConnection("test", {"conf_path": ceph_conf, "client_id": "admin"}, timeout=5)
    top = f"/{unique('ops')}"
    path, trash_path = f"{top}/project/vol", f"{top}/.trash/vol-1"
    try:
        cephfs_ops.create_dir(conn, "cephfs", path, 64 * 2**20, owner="vol-1")
        cephfs_ops.create_dir(conn, "cephfs", path, 64 * 2**20, owner="vol-1")
        assert fs.getxattr(path, OWNER_XATTR) == b"vol-1"
        assert cephfs_ops.trash_move(conn, "cephfs", path, trash_path) == trash_path
        assert cephfs_ops.trash_move(conn, "cephfs", path, trash_path) == trash_path  # moved before
        assert not exists(fs, path) and exists(fs, trash_path)
        assert cephfs_ops.trash_move(conn, "cephfs", f"{top}/project/none", f"{top}/.trash/vol-2") is None
    finally:
        cephfs_ops.remove_tree(conn, "cephfs", top)
        conn.close()
