"""Crash between the Ceph call and the commit that records it, for every mutation; then
`reconcile` makes the database and Ceph agree again, with the quota right.

The crash is real: the gunicorn worker serving the request SIGKILLs itself at the fault point
(ROBIN_FAULT_POINTS), so nothing after it runs, no rollback, no cleanup."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import rbd
import requests
from sqlalchemy import select, update

from robin.ceph import rbd_ops
from robin.db import db, utcnow
from robin.projects.models import Project
from robin.reconcile.service import reconcile
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.conftest import cephfs_exists, unique
from tests.support.server import SESSION_SECRET_KEY, running_server

pytestmark = pytest.mark.integration
MiB = 2**20
POINTS = ("volume.create,volume.resize,volume.delete,volume.restore,volume.clone,volume.flatten,snapshot.create,"
          "snapshot.delete,snapshot.rollback_started")


@pytest.fixture(scope="module")
def crashing_server(settings):
    """A robin whose workers die at every fault point (the maintenance loop off: the test reconciles)."""
    with running_server(settings.database_url, settings.ceph_conf, workers=2,
                        extra_env={"ROBIN_FAULT_POINTS": POINTS, "ROBIN_MAINTENANCE_INTERVAL": "0"}) as url:
        yield url


@pytest.fixture()
def crash(crashing_server, admin_token):
    """crash(method, path, json=...) sends the request to the crashing server; the worker dies."""
    def send(method, path, **kwargs):
        with pytest.raises(requests.ConnectionError):
            requests.request(method, crashing_server + path, headers={"Authorization": f"Bearer {admin_token}"},
                             timeout=60, **kwargs)
    return send


@pytest.fixture()
def converge(app):
    def run():
        # A CephFS call on a directory the killed worker held caps on waits until the MDS evicts the dead
        # client (its session timeout), longer than a Ceph call's deadline: reconcile again, as the next
        # maintenance round would, while a Ceph call went unanswered. Not for what the reconciler leaves alone
        # on purpose (a rollback still running in its worker) nor for a step Ceph refused (another test's row
        # may be broken on purpose): another round would only report them again.
        deadline, fixed = time.monotonic() + 90, []
        while True:
            with app.app_context():
                report = reconcile(older_than=timedelta(0))
            fixed += report.fixed  # a later round does not fix again what an earlier one did
            failed = any(error.get("code") == "ceph_unavailable" for error in report.errors)
            if not failed or time.monotonic() > deadline:
                report.fixed = fixed
                return report
    return run


def rows(db_rows, model, name):
    return db_rows(select(model).where(model.name == name))


def provisioned(admin, project) -> int:
    return admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"]


def test_crash_after_create(admin, new_project, crash, converge, rbd_ioctx, db_rows):
    project, name = new_project(), unique("img")
    crash("POST", f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": 64 * MiB})
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.CREATING and name in rbd.RBD().list(rbd_ioctx)
    report = converge()
    assert {"kind": "create_finished", "id": row.id, "name": name} in report.fixed
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.AVAILABLE and provisioned(admin, project) == 64 * MiB


def test_crash_after_cephfs_create(admin, new_project, crash, converge, db_rows):
    project, name = new_project(), unique("fs")
    crash("POST", f"/api/v2/projects/{project}/cephfs-paths", json={"name": name, "quota_bytes": 32 * MiB})
    converge()
    [row] = rows(db_rows, CephfsPath, name)
    assert row.state is VolumeState.AVAILABLE and provisioned(admin, project) == 32 * MiB


def test_crash_after_resize(admin, new_project, crash, converge, rbd_ioctx, db_rows):
    project, name = new_project(), unique("img")
    admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": 64 * MiB})
    crash("PATCH", f"/api/v2/projects/{project}/rbd-images/{name}", json={"size_bytes": 128 * MiB})
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.RESIZING and provisioned(admin, project) == 128 * MiB
    converge()
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.AVAILABLE and row.size_bytes == 128 * MiB and row.target_size_bytes is None
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == 128 * MiB
    assert provisioned(admin, project) == 128 * MiB


def test_crash_after_delete(admin, new_project, crash, converge, rbd_ioctx, db_rows):
    project, name = new_project(), unique("img")
    admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": 64 * MiB})
    crash("DELETE", f"/api/v2/projects/{project}/rbd-images/{name}")
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.DELETING and provisioned(admin, project) == 64 * MiB
    converge()
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.DELETED and row.trash_ref and row.purge_after
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert name in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    assert provisioned(admin, project) == 0


def test_crash_after_delete_records_its_own_trash_entry_among_others_of_the_name(admin, new_project, crash,
                                                                                converge, rbd_ioctx, db_rows):
    """Other projects' images of the same name wait in the trash (a name is free again once its volume is deleted):
    the delete finished after a crash records this image's trash entry, never one of theirs, which a restore would
    then hand to this project and a purge destroy before its time."""
    name = unique("img")
    for _ in range(3):
        _trashed_image(admin, new_project(), name, rbd_ioctx)
    project = new_project()
    url = f"/api/v2/projects/{project}/rbd-images"
    admin.post(url, json={"name": name, "size_bytes": 64 * MiB})
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"mine", 0)
        own_id = image.id()
    crash("DELETE", f"{url}/{name}")
    assert len([entry for entry in rbd.RBD().trash_list(rbd_ioctx) if entry["name"] == name]) == 4
    converge()
    [row] = db_rows(select(RbdImage).join(RbdImage.project).where(RbdImage.name == name, Project.name == project))
    assert row.state is VolumeState.DELETED and row.trash_ref == own_id
    assert admin.post(f"{url}/{name}/restore").status_code == 200
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.read(0, 4) == b"mine"


def test_crash_after_snapshot_create_and_delete(admin, new_project, crash, converge, rbd_ioctx, db_rows):
    project, name = new_project(), unique("img")
    base = f"/api/v2/projects/{project}/rbd-images/{name}"
    admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": 64 * MiB})
    crash("POST", f"{base}/snapshots", json={"name": "s1"})
    converge()
    [snapshot] = db_rows(select(Snapshot).where(Snapshot.name == "s1", Snapshot.rbd_image.has(name=name)))
    assert snapshot.state is SnapshotState.AVAILABLE
    crash("DELETE", f"{base}/snapshots/s1")
    converge()
    [snapshot] = db_rows(select(Snapshot).where(Snapshot.id == snapshot.id))
    assert snapshot.state is SnapshotState.DELETED
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert [s["name"] for s in image.list_snaps()] == []


def test_crash_after_clone(admin, new_project, crash, converge, rbd_ioctx, db_rows):
    project, parent, child = new_project(), unique("parent"), unique("child")
    admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": parent, "size_bytes": 64 * MiB})
    crash("POST", f"/api/v2/projects/{project}/rbd-images", json={"name": child, "source": {"image": parent}})
    converge()
    [row] = rows(db_rows, RbdImage, child)
    assert row.state is VolumeState.AVAILABLE and row.parent_id is not None
    with rbd.Image(rbd_ioctx, parent, read_only=True) as image:
        assert [s for s in image.list_snaps() if s["name"].startswith("robin-clone-")
                and s.get("namespace") == rbd.RBD_SNAP_NAMESPACE_TYPE_USER] == []
    assert provisioned(admin, project) == 128 * MiB


def test_a_create_that_never_reached_ceph_is_undone(app, admin, new_project, converge, db_rows):
    """As if the worker died after the first commit, before the Ceph call."""
    from robin.volumes import service
    from robin.volumes.kinds import RBD

    project, name = new_project(), unique("img")
    with app.app_context():
        service.reserve_new(RBD, project, {"name": name, "size_bytes": 64 * MiB},
                            RBD.placement({"name": name}, project))
    assert provisioned(admin, project) == 64 * MiB
    report = converge()
    assert [entry["kind"] for entry in report.fixed if entry["name"] == name] == ["create_undone"]
    assert rows(db_rows, RbdImage, name) == [] and provisioned(admin, project) == 0


def test_an_image_removed_between_the_reconcilers_open_and_its_trash_move_counts_as_gone(
        app, admin, new_project, converge, rbd_ioctx, db_rows, monkeypatch):
    """A `?purge=true` robin stopped waiting for goes on removing the image in librbd, its row left `deleting`. The
    reconciler finishing that delete into the trash opens the image for its id, then the remove ends, then its move
    finds no image: the delete is finished (nothing left to trash, so purged), not reported as an error."""
    project, name = new_project(), unique("img")
    assert admin.post(f"/api/v2/projects/{project}/rbd-images",
                      json={"name": name, "size_bytes": 64 * MiB}).status_code == 201
    [row] = rows(db_rows, RbdImage, name)
    with app.app_context(), db.writing() as connection:  # as the delete's first commit left it
        connection.execute(update(RbdImage.__table__).where(RbdImage.id == row.id)
                           .values(state=VolumeState.DELETING, updated_at=utcnow()))
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        image_id = image.id()
    mark = rbd_ops._set_owner

    def then_the_remove_ends(ioctx, key, owner):
        # Between the open and the move: the move's trash mark is the last step before it.
        mark(ioctx, key, owner)
        if key == f"trash/{image_id}" and owner is not None:
            rbd.RBD().remove(rbd_ioctx, name)

    monkeypatch.setattr(rbd_ops, "_set_owner", then_the_remove_ends)
    report = converge()
    assert [error for error in report.errors if error["id"] == row.id] == []
    assert {"kind": "delete_finished", "id": row.id, "name": name} in report.fixed
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.DELETED and row.trash_ref is None and row.purged_at is not None
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert name not in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    assert rbd_ops._owner(rbd_ioctx, f"trash/{image_id}") is None  # the move's mark went with the image
    assert provisioned(admin, project) == 0


def _trashed_image(admin, project, name, rbd_ioctx) -> str:
    """A 64 MiB image holding b"ledger", deleted to the trash; its URL."""
    url = f"/api/v2/projects/{project}/rbd-images"
    admin.post(url, json={"name": name, "size_bytes": 64 * MiB})
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"ledger", 0)
    assert admin.delete(f"{url}/{name}").status_code == 204
    return f"{url}/{name}"


def test_crash_after_restore_finishes_it(admin, new_project, crash, converge, rbd_ioctx, db_rows):
    project, name = new_project(), unique("img")
    url = _trashed_image(admin, project, name, rbd_ioctx)
    crash("POST", f"{url}/restore")
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.CREATING and row.trash_ref and name in rbd.RBD().list(rbd_ioctx)
    assert {"kind": "restore_finished", "id": row.id, "name": name} in converge().fixed
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.AVAILABLE and provisioned(admin, project) == 64 * MiB
    assert (row.deleted_at, row.purge_after, row.trash_ref) == (None, None, None)  # not a volume in the trash
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.read(0, 6) == b"ledger"
    assert admin.get(url).json["deleted_at"] is None


def test_a_restore_that_never_reached_ceph_goes_back_to_the_trash(app, admin, new_project, converge, rbd_ioctx,
                                                                  db_rows):
    """As if the worker died after the restore's first commit, before Ceph's: the image is still in the trash,
    and stays restorable (undone as a create, its row would go and the image stay in the trash for good)."""
    from robin.volumes import service
    from robin.volumes.kinds import RBD

    project, name = new_project(), unique("img")
    url = _trashed_image(admin, project, name, rbd_ioctx)
    [trashed] = rows(db_rows, RbdImage, name)
    with app.app_context():
        service._begin_restore(RBD, project, name)
    assert provisioned(admin, project) == 64 * MiB
    assert {"kind": "restore_undone", "id": trashed.id, "name": name} in converge().fixed
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.DELETED and provisioned(admin, project) == 0
    assert (row.trash_ref, row.purge_after, row.purged_at) == (trashed.trash_ref, trashed.purge_after, None)
    assert name in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    assert admin.post(f"{url}/restore").status_code == 200
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.read(0, 6) == b"ledger"


def test_a_cephfs_restore_that_never_reached_ceph_goes_back_to_the_trash(app, admin, new_project, converge, fs,
                                                                         db_rows):
    from robin.volumes import service
    from robin.volumes.kinds import CEPHFS

    project = new_project()
    url = f"/api/v2/projects/{project}/cephfs-paths"
    body = admin.post(url, json={"name": unique("fs"), "quota_bytes": 32 * MiB}).json
    assert admin.delete(f"{url}/{body['name']}").status_code == 204
    [trashed] = rows(db_rows, CephfsPath, body["name"])
    with app.app_context():
        service._begin_restore(CEPHFS, project, body["name"])
    assert {"kind": "restore_undone", "id": trashed.id, "name": body["name"]} in converge().fixed
    [row] = rows(db_rows, CephfsPath, body["name"])
    assert row.state is VolumeState.DELETED and row.trash_ref == trashed.trash_ref
    assert cephfs_exists(fs, trashed.trash_ref) and not cephfs_exists(fs, body["path"])
    assert provisioned(admin, project) == 0
    assert admin.post(f"{url}/{body['name']}/restore").status_code == 200
    assert cephfs_exists(fs, body["path"])


def test_crash_after_purge_is_finished_by_reconcile(app, admin, new_project, converge, rbd_ioctx, db_rows, settings,
                                                    tmp_path):
    """`robin purge` killed after Ceph purged the image, before the commit that records it: the row keeps its
    trash_ref with purged_at set, and the reconciler purges again (idempotently) and records it."""
    project, name = new_project(), unique("img")
    url = _trashed_image(admin, project, name, rbd_ioctx)
    [row] = rows(db_rows, RbdImage, name)
    with app.app_context(), db.unit_of_work() as session:  # its time in the trash is over
        session.execute(RbdImage.__table__.update().where(RbdImage.id == row.id).values(
            purge_after=utcnow() - timedelta(seconds=1)))
    env = {**os.environ, "ROBIN_DATABASE_URL": settings.database_url, "ROBIN_CEPH_CONF": settings.ceph_conf,
           "ROBIN_SECRET_KEY": SESSION_SECRET_KEY, "ROBIN_STATE_DIR": str(tmp_path), "ROBIN_LOG_LEVEL": "WARNING",
           "ROBIN_FAULT_POINTS": "volume.purge"}
    purged = subprocess.run([str(Path(sys.executable).with_name("robin")), "purge"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert purged.returncode == -9, purged.stderr
    [row] = rows(db_rows, RbdImage, name)
    assert row.purged_at is not None and row.trash_ref is not None  # claimed and purged, not recorded
    assert name not in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    assert {"kind": "purge_finished", "id": row.id, "name": name} in converge().fixed
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.DELETED and row.trash_ref is None and provisioned(admin, project) == 0
    assert admin.post(f"{url}/restore").json["error"]["code"] == "not_in_trash"


def test_drift_is_reported_and_left_alone(admin, new_project, converge, rbd_ioctx):
    orphan = unique("orphan")
    rbd.RBD().create(rbd_ioctx, orphan, MiB)
    project, gone = new_project(), unique("img")
    admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": gone, "size_bytes": MiB})
    rbd.RBD().remove(rbd_ioctx, gone)
    try:
        drift = {(entry["kind"], entry["evidence"]["name"]): entry["evidence"] for entry in converge().drift}
        assert drift[("orphan_image", orphan)]["pool"] == "rbd"
        assert drift[("missing_image", gone)]["cluster"] == "default"
        assert orphan in rbd.RBD().list(rbd_ioctx)
    finally:
        rbd.RBD().remove(rbd_ioctx, orphan)


def _rolled_forward(admin, project, name, rbd_ioctx) -> str:
    """A 64 MiB image with a snapshot "s" of b"before", then grown to 128 MiB and written over,
    with data at its end; its rollback to "s" is sent to the crashing server."""
    url = f"/api/v2/projects/{project}/rbd-images"
    admin.post(url, json={"name": name, "size_bytes": 64 * MiB})
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"before", 0)
    admin.post(f"{url}/{name}/snapshots", json={"name": "s"})
    assert admin.patch(f"{url}/{name}", json={"size_bytes": 128 * MiB}).status_code == 200
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"after!", 0)
        image.write(b"tail", 100 * MiB)
    return f"{url}/{name}/snapshots/s/rollback"


def _assert_rolled_back(admin, project, name, rbd_ioctx, db_rows) -> None:
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.AVAILABLE and row.size_bytes == 64 * MiB
    assert row.target_size_bytes is None and row.rollback_snapshot is None
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == 64 * MiB and image.read(0, 6) == b"before"
    assert provisioned(admin, project) == 64 * MiB


def test_rollback_then_crash_is_finished_by_reconcile_never_shrunk(admin, new_project, crash, converge, rbd_ioctx,
                                                                   db_rows):
    project, name = new_project(), unique("img")
    crash("POST", _rolled_forward(admin, project, name, rbd_ioctx))
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.ROLLING_BACK and row.rollback_snapshot == "s"
    assert row.target_size_bytes == 64 * MiB and provisioned(admin, project) == 128 * MiB
    report = converge()
    assert {"kind": "rollback_finished", "id": row.id, "name": name, "snapshot": "s"} in report.fixed
    _assert_rolled_back(admin, project, name, rbd_ioctx, db_rows)


def test_snapshot_of_an_unfinished_rollback_cannot_be_deleted(admin, new_project, crash, converge, rbd_ioctx,
                                                              db_rows):
    """The reconciler repairs a rollback cut short by rolling back to its snapshot again: deleting that
    snapshot meanwhile would leave the image with blocks of both states for good."""
    project, name = new_project(), unique("img")
    crash("POST", _rolled_forward(admin, project, name, rbd_ioctx))
    refused = admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}/snapshots/s")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "snapshot_busy"
    [snapshot] = db_rows(select(Snapshot).where(Snapshot.name == "s", Snapshot.rbd_image.has(name=name)))
    assert snapshot.state is SnapshotState.AVAILABLE
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert [s["name"] for s in image.list_snaps()] == ["s"]
    converge()
    _assert_rolled_back(admin, project, name, rbd_ioctx, db_rows)
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}/snapshots/s").status_code == 204


def test_rollback_longer_than_older_than_is_left_to_its_worker(admin, new_project, crash, converge, rbd_ioctx,
                                                               db_rows):
    """A rollback still running holds the image open: however old its row, the reconciler neither
    shrinks nor rolls back under it; once nothing has it open, it finishes the rollback."""
    project, name = new_project(), unique("img")
    crash("POST", _rolled_forward(admin, project, name, rbd_ioctx))
    with rbd.Image(rbd_ioctx, name) as held:  # as the worker still rolling back would
        report = converge()
        [note] = [entry for entry in report.errors if entry["name"] == name]
        assert note["kind"] == "rollback_in_progress" and note["watchers"]
        assert held.size() == 128 * MiB and held.read(0, 6) == b"after!" and held.read(100 * MiB, 4) == b"tail"
    [row] = rows(db_rows, RbdImage, name)
    assert row.state is VolumeState.ROLLING_BACK and row.size_bytes == 128 * MiB
    assert {"kind": "rollback_finished", "id": row.id, "name": name, "snapshot": "s"} in converge().fixed
    _assert_rolled_back(admin, project, name, rbd_ioctx, db_rows)


def test_flatten_then_crash_holds_deletes_off_and_is_finished_by_reconcile(admin, new_project, crash, converge,
                                                                          rbd_ioctx, db_rows):
    project, parent, child = new_project(), unique("parent"), unique("child")
    url = f"/api/v2/projects/{project}/rbd-images"
    admin.post(url, json={"name": parent, "size_bytes": 64 * MiB})
    admin.post(url, json={"name": child, "source": {"image": parent}})
    crash("POST", f"{url}/{child}/flatten")
    [row] = rows(db_rows, RbdImage, child)
    assert row.state is VolumeState.FLATTENING and row.parent_id is not None
    refused = admin.delete(f"{url}/{child}")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "volume_busy"
    assert {"kind": "flatten_finished", "id": row.id, "name": child} in converge().fixed
    [row] = rows(db_rows, RbdImage, child)
    assert row.state is VolumeState.AVAILABLE and row.parent_id is None and row.parent_snapshot is None
    with rbd.Image(rbd_ioctx, child, read_only=True) as image:
        with pytest.raises(rbd.ImageNotFound):
            image.parent_info()
