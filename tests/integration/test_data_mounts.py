"""Data through real mounts: a file written into a mounted RBD image (rbd-fuse + loop + ext4) and a
CephFS path (ceph-fuse), snapshotted through the API, changed, and read back as it was."""
from __future__ import annotations

import os

import pytest
import rbd

from tests.conftest import unique
from tests.support.mounts import ceph_fuse, rbd_filesystem, read, write

pytestmark = pytest.mark.integration
MiB = 2**20


def rbd_snaps(ioctx, name) -> set[str]:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return {snap["name"] for snap in image.list_snaps()}


def test_rbd_rollback_brings_back_the_file(admin, new_project, ceph_conf, rbd_ioctx):
    project = new_project()
    created = admin.post(f"/api/v2/projects/{project}/rbd-images",
                         json={"name": unique("data"), "size_bytes": 64 * MiB})
    assert created.status_code == 201, created.json
    name, pool = created.json["name"], created.json["pool"]
    url = f"/api/v2/projects/{project}/rbd-images/{name}"

    with rbd_filesystem(ceph_conf, pool, name, mkfs=True) as mountpoint:
        write(os.path.join(mountpoint, "hello.txt"), "version 1")

    snapshot = admin.post(f"{url}/snapshots", json={"name": "v1"})
    assert snapshot.status_code == 201, snapshot.json
    assert rbd_snaps(rbd_ioctx, name) == {"v1"}

    with rbd_filesystem(ceph_conf, pool, name, mkfs=False) as mountpoint:
        assert read(os.path.join(mountpoint, "hello.txt")) == "version 1"
        write(os.path.join(mountpoint, "hello.txt"), "version 2")
        # rbd-fuse holds the image open under a mounted file system: rewriting it now would corrupt it.
        refused = admin.post(f"{url}/snapshots/v1/rollback")
        assert refused.status_code == 409, refused.json
        assert refused.json["error"]["code"] == "volume_in_use"
        assert refused.json["error"]["details"]["users"]
        assert read(os.path.join(mountpoint, "hello.txt")) == "version 2"

    rolled_back = admin.post(f"{url}/snapshots/v1/rollback")
    assert rolled_back.status_code == 200, rolled_back.json
    assert rolled_back.json["name"] == "v1"

    with rbd_filesystem(ceph_conf, pool, name, mkfs=False) as mountpoint:
        assert sorted(os.listdir(mountpoint)) == ["hello.txt", "lost+found"]
        assert read(os.path.join(mountpoint, "hello.txt")) == "version 1"

    deleted = admin.delete(url, query_string={"with_snapshots": "true", "purge": "true"})
    assert deleted.status_code == 204, deleted.json
    assert name not in rbd.RBD().list(rbd_ioctx)


def test_cephfs_snapshot_keeps_the_old_file(admin, new_project, ceph_conf):
    project = new_project()
    created = admin.post(f"/api/v2/projects/{project}/cephfs-paths",
                         json={"name": unique("data"), "quota_bytes": 64 * MiB})
    assert created.status_code == 201, created.json
    url = f"/api/v2/projects/{project}/cephfs-paths/{created.json['name']}"
    snap = unique("s")

    with ceph_fuse(ceph_conf, created.json["path"]) as mountpoint:
        notes = os.path.join(mountpoint, "notes.txt")
        write(notes, "draft 1")
        snapshot = admin.post(f"{url}/snapshots", json={"name": snap})
        assert snapshot.status_code == 201, snapshot.json
        write(notes, "draft 2")
        assert read(notes) == "draft 2"
        assert os.listdir(os.path.join(mountpoint, ".snap")) == [snap]
        assert read(os.path.join(mountpoint, ".snap", snap, "notes.txt")) == "draft 1"

        refused = admin.post(f"{url}/snapshots/{snap}/rollback")
        assert refused.status_code == 400, refused.json
        assert refused.json["error"]["code"] == "rollback_not_supported"
        assert f".snap/{snap}" in refused.json["error"]["message"]
        assert read(notes) == "draft 2"  # nothing was rolled back

    deleted = admin.delete(url, query_string={"with_snapshots": "true", "purge": "true"})
    assert deleted.status_code == 204, deleted.json
    assert admin.get(url).status_code == 404
