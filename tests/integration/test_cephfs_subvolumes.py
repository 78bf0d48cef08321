"""CephFS volumes in the subvolume layout (ROBIN_CEPHFS_LAYOUTS=cephfs:subvolume) through the API, checked after
each call in what the mgr's volumes module answers (`fs subvolume info/ls/snapshot ls`) and in the database; drift
and adoption of subvolumes made with the mgr behind robin's back (robin's lost ones, foreign ones, ceph-csi's
`csi-vol-*` in group `csi`)."""
from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from robin.db import utcnow
from robin.reconcile.service import reconcile
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes import service
from robin.volumes.models import CephfsPath, VolumeState
from tests.conftest import cephfs_exists as exists
from tests.conftest import unique
from tests.support.net import wait_until
from tests.support.server import running_server

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30
OWNER_KEY = "robin.volume_id"
SUBVOLUMES = ("cephfs:subvolume",)


@pytest.fixture()
def mgr(rados_cluster):
    """mgr(prefix, **args) -> the volumes module's answer (parsed JSON, or text), or None for ENOENT."""
    def ask(prefix: str, **args):
        ret, out, status = rados_cluster.mgr_command(
            json.dumps({"prefix": prefix, "vol_name": "cephfs", "format": "json", **args}), b"", timeout=120)
        if ret == -2:
            return None
        assert ret == 0, (prefix, args, status)
        text = out.decode().strip()
        try:
            return json.loads(text) if text else ""
        except ValueError:
            return text
    return ask


def subvolumes(mgr, group: str) -> set[str]:
    return {entry["name"] for entry in mgr("fs subvolume ls", group_name=group) or []}


def snapshots(mgr, group: str, name: str) -> set[str]:
    return {entry["name"] for entry in mgr("fs subvolume snapshot ls", sub_name=name, group_name=group)}


def use_subvolumes(app, monkeypatch) -> None:
    settings = app.config["ROBIN_SETTINGS"]
    monkeypatch.setitem(app.config, "ROBIN_SETTINGS", dataclasses.replace(settings, cephfs_layouts=SUBVOLUMES))


@pytest.fixture()
def subvolume_layout(app, monkeypatch):
    use_subvolumes(app, monkeypatch)


@pytest.fixture()
def project(new_project, subvolume_layout):
    return new_project(max_bytes=GiB, max_volumes=20)


def url(project: str, name: str = "") -> str:
    return f"/api/v2/projects/{project}/cephfs-paths" + (f"/{name}" if name else "")


def create(client, project, **body):
    body.setdefault("name", unique("sv"))
    body.setdefault("quota_bytes", 64 * MiB)
    return client.post(url(project), json=body)


def row(db_rows, name) -> CephfsPath:
    [found] = db_rows(select(CephfsPath).where(CephfsPath.name == name).order_by(CephfsPath.created_at.desc())
                      .limit(1))
    return found


def usage(admin, project) -> dict:
    return admin.get(f"/api/v2/projects/{project}/usage").json


def write(fs, path: str, data: bytes) -> None:
    handle = fs.open(path, "w", 0o644)
    try:
        fs.write(handle, data, 0)
    finally:
        fs.close(handle)


def test_create_makes_a_subvolume_in_the_projects_group(admin, project, mgr, fs, db_rows):
    response = create(admin, project, quota_bytes=100 * MiB)
    assert response.status_code == 201, response.json
    body = response.json
    name = body["name"]
    path = mgr("fs subvolume getpath", sub_name=name, group_name=project)
    assert body["layout"] == "subvolume" and body["path"] == path and path.startswith(f"/volumes/{project}/{name}/")
    assert body["state"] == "available" and body["quota_bytes"] == 100 * MiB
    assert subvolumes(mgr, project) == {name}
    info = mgr("fs subvolume info", sub_name=name, group_name=project)
    assert info["bytes_quota"] == 100 * MiB and info["path"] == path
    assert mgr("fs subvolume metadata get", sub_name=name, key_name=OWNER_KEY, group_name=project) == body["id"]
    found = row(db_rows, name)
    assert found.state is VolumeState.AVAILABLE and found.layout == "subvolume" and found.path == path
    assert found.size_bytes == 100 * MiB
    assert admin.get(url(project, name)).json["path"] == path
    listed = admin.get(url(project)).json["items"]
    assert [(item["name"], item["layout"], item["path"]) for item in listed] == [(name, "subvolume", path)]
    # The path is the subvolume's data directory: what a mount uses, and what robin measures.
    write(fs, f"{path}/data", b"x" * MiB)
    assert admin.get(url(project, name), query_string={"with_used": "true"}).status_code == 200
    assert not exists(fs, f"/robin/{project}/{name}")


def test_resize_both_ways_even_below_what_is_used(admin, project, mgr, fs, db_rows):
    body = create(admin, project, quota_bytes=64 * MiB).json
    name = body["name"]
    write(fs, f"{body['path']}/data", b"y" * (8 * MiB))
    grown = admin.patch(url(project, name), json={"quota_bytes": 256 * MiB})
    assert grown.status_code == 200 and grown.json["quota_bytes"] == 256 * MiB
    assert mgr("fs subvolume info", sub_name=name, group_name=project)["bytes_quota"] == 256 * MiB
    assert usage(admin, project)["provisioned_bytes"] == 256 * MiB
    # As for a directory: a lower quota refuses further writes and deletes nothing, whatever is used.
    shrunk = admin.patch(url(project, name), json={"quota_bytes": MiB})
    assert shrunk.status_code == 200 and shrunk.json["quota_bytes"] == MiB
    assert mgr("fs subvolume info", sub_name=name, group_name=project)["bytes_quota"] == MiB
    assert fs.stat(f"{body['path']}/data").st_size == 8 * MiB
    found = row(db_rows, name)
    assert found.size_bytes == MiB and found.target_size_bytes is None and found.state is VolumeState.AVAILABLE
    refused = admin.patch(url(project, name), json={"quota_bytes": 2 * GiB})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "quota_exceeded"
    assert mgr("fs subvolume info", sub_name=name, group_name=project)["bytes_quota"] == MiB


def test_snapshots_are_subvolume_snapshots_and_rollback_is_refused(admin, project, mgr, db_rows):
    name = create(admin, project).json["name"]
    base = url(project, name)
    made = admin.post(f"{base}/snapshots", json={"name": "s1"})
    assert made.status_code == 201, made.json
    assert snapshots(mgr, project, name) == {"s1"}
    [snapshot] = db_rows(select(Snapshot).where(Snapshot.id == made.json["id"]))
    assert snapshot.state is SnapshotState.AVAILABLE
    assert [item["name"] for item in admin.get(f"{base}/snapshots").json["items"]] == ["s1"]
    refused = admin.post(f"{base}/snapshots/s1/rollback")
    assert refused.status_code == 400 and refused.json["error"]["code"] == "rollback_not_supported"
    assert "_s1_" in refused.json["error"]["message"]
    assert snapshots(mgr, project, name) == {"s1"} and row(db_rows, name).state is VolumeState.AVAILABLE
    assert admin.delete(f"{base}/snapshots/s1").status_code == 204
    assert snapshots(mgr, project, name) == set()
    [snapshot] = db_rows(select(Snapshot).where(Snapshot.id == made.json["id"]))
    assert snapshot.state is SnapshotState.DELETED


def test_trash_keeps_the_subvolume_until_its_purge(app, admin, project, mgr, fs, db_rows):
    body = create(admin, project).json
    name = body["name"]
    write(fs, f"{body['path']}/keep", b"keep me")
    assert admin.post(f"{url(project, name)}/snapshots", json={"name": "s1"}).status_code == 201
    refused = admin.delete(url(project, name))
    assert refused.status_code == 409 and refused.json["error"]["code"] == "volume_has_snapshots"
    assert admin.delete(url(project, name), query_string={"with_snapshots": "true"}).status_code == 204
    # Robin's snapshots went with it; the subvolume waits in its place, its quota released.
    assert subvolumes(mgr, project) == {name} and snapshots(mgr, project, name) == set()
    trashed = row(db_rows, name)
    assert trashed.state is VolumeState.DELETED and trashed.trash_ref == body["path"] and trashed.purge_after
    assert usage(admin, project)["provisioned_bytes"] == 0
    # Its name cannot be used again in the project while it waits, and trying changes nothing.
    taken = create(admin, project, name=name)
    assert taken.status_code == 409 and taken.json["error"]["code"] == "name_taken"
    assert mgr("fs subvolume metadata get", sub_name=name, key_name=OWNER_KEY, group_name=project) == body["id"]
    assert mgr("fs subvolume info", sub_name=name, group_name=project)["bytes_quota"] == 64 * MiB
    assert len(db_rows(select(CephfsPath).where(CephfsPath.name == name))) == 1
    restored = admin.post(f"{url(project, name)}/restore")
    assert restored.status_code == 200 and restored.json["state"] == "available"
    assert restored.json["path"] == body["path"] and fs.stat(f"{body['path']}/keep").st_size == 7
    assert usage(admin, project)["provisioned_bytes"] == 64 * MiB
    assert admin.delete(url(project, name)).status_code == 204
    with app.app_context():
        counts = service.purge_due(utcnow() + timedelta(days=365))
    assert counts["failed"] == 0
    assert subvolumes(mgr, project) == set()
    purged = row(db_rows, name)
    assert purged.state is VolumeState.DELETED and purged.purged_at and purged.trash_ref is None
    assert admin.post(f"{url(project, name)}/restore").status_code == 404


def test_a_name_in_the_trash_is_not_taken_by_another_project_until_its_purge(app, admin, project, new_project, mgr,
                                                                             fs, db_rows):
    """The mgr names an isolated subvolume's RADOS namespace after the subvolume alone, not its group: another
    project's subvolume of the same name would share the namespace of this one's data, waiting in the trash."""
    other = new_project(max_bytes=GiB)
    body = create(admin, project).json
    name = body["name"]
    write(fs, f"{body['path']}/secret", b"project one's")
    assert admin.delete(url(project, name)).status_code == 204
    taken = create(admin, other, name=name)
    assert taken.status_code == 409, taken.json
    assert taken.json["error"]["code"] == "name_taken" and taken.json["error"]["details"]["in_trash"] is True
    assert subvolumes(mgr, other) == set() and usage(admin, other)["provisioned_bytes"] == 0
    assert [r.project_id for r in db_rows(select(CephfsPath).where(CephfsPath.name == name))] == [row(db_rows,
                                                                                                     name).project_id]
    purged = admin.post(f"{url(project, name)}/purge", query_string={"id": body["id"]})  # an admin's, now
    assert purged.status_code == 204, purged.json
    assert subvolumes(mgr, project) == set()
    assert row(db_rows, name).purged_at is not None and row(db_rows, name).trash_ref is None
    made = create(admin, other, name=name)
    assert made.status_code == 201, made.json
    assert subvolumes(mgr, other) == {name}


def test_purge_at_once_keeps_snapshots_robin_did_not_take(admin, project, mgr, db_rows):
    name = create(admin, project).json["name"]
    mgr("fs subvolume snapshot create", sub_name=name, snap_name="theirs", group_name=project)
    assert admin.delete(url(project, name), query_string={"purge": "true"}).status_code == 204
    # The data is gone; the snapshot someone else took is theirs to remove.
    assert mgr("fs subvolume info", sub_name=name, group_name=project)["state"] == "snapshot-retained"
    assert snapshots(mgr, project, name) == {"theirs"}
    found = row(db_rows, name)
    assert found.state is VolumeState.DELETED and found.purged_at and found.trash_ref is None
    mgr("fs subvolume snapshot rm", sub_name=name, snap_name="theirs", group_name=project)
    # The last snapshot gone, the mgr removes the subvolume itself: at once, or, while its purge queue is still
    # removing the data, when that purge ends (mgr/volumes: a retained subvolume with pending purges is not
    # "purgeable" yet, and the purge job removes it afterwards).
    wait_until(lambda: subvolumes(mgr, project) == set(), timeout=120, interval=0.5,
               what="the mgr to remove the subvolume whose last retained snapshot went")


def test_a_foreign_subvolume_is_never_taken_over(admin, project, mgr, db_rows):
    name = unique("foreign")
    mgr("fs subvolumegroup create", group_name=project)
    mgr("fs subvolume create", sub_name=name, group_name=project, size=5 * MiB)
    response = create(admin, project, name=name)
    assert response.status_code == 409 and response.json["error"]["code"] == "name_taken"
    info = mgr("fs subvolume info", sub_name=name, group_name=project)
    assert info["bytes_quota"] == 5 * MiB and info["state"] == "complete"
    assert mgr("fs subvolume metadata get", sub_name=name, key_name=OWNER_KEY, group_name=project) is None
    assert db_rows(select(CephfsPath).where(CephfsPath.name == name)) == []
    assert usage(admin, project)["volumes"] == 0
    mgr("fs subvolume rm", sub_name=name, group_name=project)


@pytest.mark.parametrize("override, field", [
    ({"quota_bytes": 0}, "quota_bytes"),
    ({"name": "a/b"}, "name"),
    ({"fs": "otherfs"}, "fs"),
])
def test_bad_input_is_422_and_makes_no_group(admin, project, mgr, override, field):
    body = {"name": unique("bad"), "quota_bytes": MiB} | override
    response = admin.post(url(project), json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
    assert usage(admin, project)["volumes"] == 0
    assert project not in {entry["name"] for entry in mgr("fs subvolumegroup ls")}


def test_existing_directories_keep_their_layout(app, admin, new_project, monkeypatch, mgr, fs, db_rows):
    """The setting applies to new volumes: a directory made before it stays a directory."""
    project = new_project(max_bytes=GiB)
    name = create(admin, project).json["name"]
    use_subvolumes(app, monkeypatch)
    assert admin.patch(url(project, name), json={"quota_bytes": 128 * MiB}).status_code == 200
    assert fs.getxattr(f"/robin/{project}/{name}", "ceph.quota.max_bytes").decode() == str(128 * MiB)
    newer = create(admin, project).json
    assert newer["layout"] == "subvolume" and admin.get(url(project, name)).json["layout"] == "directory"
    assert subvolumes(mgr, project) == {newer["name"]}
    assert admin.delete(url(project, name), query_string={"purge": "true"}).status_code == 204
    assert not exists(fs, f"/robin/{project}/{name}") and subvolumes(mgr, project) == {newer["name"]}
    assert row(db_rows, name).layout == "directory"


def test_member_of_another_project_sees_nothing(as_role, admin, project, new_project):
    name = create(admin, project).json["name"]
    outsider = as_role("member", new_project())
    assert outsider.get(url(project, name)).status_code == 403
    assert outsider.delete(url(project, name)).status_code == 403


# --- crashes: the reconciler finishes what a dead worker left -------------------------------------

@pytest.fixture(scope="module")
def crashing_server(settings):
    """A robin placing CephFS volumes as subvolumes, whose workers die at these fault points."""
    with running_server(settings.database_url, settings.ceph_conf, workers=2, extra_env={
            "ROBIN_FAULT_POINTS": "volume.create,volume.delete,volume.clone", "ROBIN_MAINTENANCE_INTERVAL": "0",
            "ROBIN_CEPHFS_LAYOUTS": "cephfs:subvolume"}) as url_:
        yield url_


@pytest.fixture()
def crash(crashing_server, admin_token):
    def send(method, path, **kwargs):
        with pytest.raises(requests.ConnectionError):
            requests.request(method, crashing_server + path, headers={"Authorization": f"Bearer {admin_token}"},
                             timeout=120, **kwargs)
    return send


def converge(app):
    with app.app_context():
        return reconcile(older_than=timedelta(0), survey_drift=False)


def test_crash_after_create_records_the_path(app, admin, project, crash, mgr, db_rows):
    name = unique("sv")
    crash("POST", url(project), json={"name": name, "quota_bytes": 32 * MiB})
    stuck = row(db_rows, name)
    assert stuck.state is VolumeState.CREATING and stuck.path == f"/volumes/{project}/{name}"
    assert subvolumes(mgr, project) == {name}
    report = converge(app)
    assert {"kind": "create_finished", "id": stuck.id, "name": name} in report.fixed
    done = row(db_rows, name)
    assert done.state is VolumeState.AVAILABLE
    assert done.path == mgr("fs subvolume getpath", sub_name=name, group_name=project)
    assert usage(admin, project)["provisioned_bytes"] == 32 * MiB


def test_crash_after_delete_finishes_into_the_trash(app, admin, project, crash, mgr, db_rows):
    body = create(admin, project).json
    crash("DELETE", url(project, body["name"]))
    assert row(db_rows, body["name"]).state is VolumeState.DELETING
    converge(app)
    trashed = row(db_rows, body["name"])
    assert trashed.state is VolumeState.DELETED and trashed.trash_ref == body["path"]
    assert subvolumes(mgr, project) == {body["name"]}
    assert admin.post(f"{url(project, body['name'])}/restore").status_code == 200


# --- drift against `fs subvolume ls`, and adoption -----------------------------------------------------

def drift(admin) -> dict:
    response = admin.get("/api/v2/audit/drift", query_string={"older_than": 0})
    assert response.status_code == 200, response.json
    return response.json


def finding(report: dict, kind: str, name: str) -> dict | None:
    found = [item["evidence"] | {"project": item["project"]} for item in report["findings"]
             if item["kind"] == kind and item["evidence"].get("name") == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_rows_and_subvolumes_are_compared(admin, project, mgr, db_rows):
    kept, gone, resized = (create(admin, project).json for _ in range(3))
    assert admin.post(f"{url(project, kept['name'])}/snapshots", json={"name": "robins"}).status_code == 201
    mgr("fs subvolume snapshot create", sub_name=kept["name"], snap_name="theirs", group_name=project)
    mgr("fs subvolume snapshot rm", sub_name=kept["name"], snap_name="robins", group_name=project)
    mgr("fs subvolume rm", sub_name=gone["name"], group_name=project)
    mgr("fs subvolume resize", sub_name=resized["name"], new_size=str(8 * MiB), group_name=project)
    foreign = unique("foreign")
    mgr("fs subvolume create", sub_name=foreign, group_name=project, size=4 * MiB)
    report = drift(admin)
    assert finding(report, "snapshot_unknown_to_robin", kept["name"])["snapshot"] == "theirs"
    assert finding(report, "snapshot_missing_in_ceph", kept["name"])["snapshot"] == "robins"
    missing = finding(report, "missing_subvolume", gone["name"])
    assert missing["group"] == project and missing["volume_id"] == gone["id"] and missing["project"] == project
    mismatch = finding(report, "quota_mismatch", resized["name"])
    assert mismatch["found_quota_bytes"] == 8 * MiB and mismatch["recorded_quota_bytes"] == 64 * MiB
    orphan = finding(report, "orphan_subvolume", foreign)
    assert orphan["group"] == project and orphan["project"] == project and orphan["quota_bytes"] == 4 * MiB
    assert orphan["subvolume_state"] == "complete" and orphan["snapshots"] == []
    for volume in (kept, resized):
        assert finding(report, "missing_subvolume", volume["name"]) is None
    assert finding(report, "quota_mismatch", kept["name"]) is None
    assert report["counts"]["orphan_subvolume"] >= 1
    # Reported, never touched.
    assert subvolumes(mgr, project) == {kept["name"], resized["name"], foreign}
    assert [row.state for row in db_rows(select(CephfsPath).where(CephfsPath.id == gone["id"]))] == \
        [VolumeState.AVAILABLE]
    mgr("fs subvolume snapshot rm", sub_name=kept["name"], snap_name="theirs", group_name=project)
    mgr("fs subvolume rm", sub_name=foreign, group_name=project)


def test_a_lost_robin_subvolume_is_told_apart_and_adopted_with_its_snapshots(admin, project, mgr, db_rows):
    name, lost_id = unique("lost"), str(uuid.uuid4())
    mgr("fs subvolumegroup create", group_name=project)
    mgr("fs subvolume create", sub_name=name, group_name=project, size=16 * MiB)
    mgr("fs subvolume metadata set", sub_name=name, key_name=OWNER_KEY, value=lost_id, group_name=project)
    mgr("fs subvolume snapshot create", sub_name=name, snap_name="s1", group_name=project)
    orphan = finding(drift(admin), "orphan_robin_subvolume", name)
    assert orphan["owner"] == lost_id and orphan["snapshots"] == ["s1"]
    response = admin.post(f"/api/v2/projects/{project}/cephfs-paths:adopt", json={"name": name})
    assert response.status_code == 201, response.json
    body = response.json
    path = mgr("fs subvolume getpath", sub_name=name, group_name=project)
    assert body["layout"] == "subvolume" and body["path"] == path and body["quota_bytes"] == 16 * MiB
    assert mgr("fs subvolume metadata get", sub_name=name, key_name=OWNER_KEY, group_name=project) == body["id"]
    [row] = db_rows(select(CephfsPath).where(CephfsPath.id == body["id"]))
    assert row.subvolume_group == project and row.state is VolumeState.AVAILABLE
    assert [snapshot.name for snapshot in db_rows(select(Snapshot).where(Snapshot.cephfs_path_id == row.id))] \
        == ["s1"]
    assert finding(drift(admin), "orphan_robin_subvolume", name) is None
    # The full lifecycle afterwards.
    assert admin.patch(url(project, name), json={"quota_bytes": 32 * MiB}).status_code == 200
    assert mgr("fs subvolume info", sub_name=name, group_name=project)["bytes_quota"] == 32 * MiB
    assert admin.delete(url(project, name), query_string={"with_snapshots": "true", "purge": "true"}) \
        .status_code == 204
    assert subvolumes(mgr, project) == set()


def test_ceph_csi_subvolumes_are_adopted_where_they_are(admin, project, mgr, db_rows):
    """A ceph-csi volume: `csi-vol-<uuid>` in group `csi`, no project's; adopted into a project, it stays in its
    group, and robin manages it from then on."""
    name = f"csi-vol-{uuid.uuid4()}"
    mgr("fs subvolumegroup create", group_name="csi")
    mgr("fs subvolume create", sub_name=name, group_name="csi", size=10 * MiB)
    try:
        orphan = finding(drift(admin), "orphan_subvolume", name)
        assert orphan["group"] == "csi" and orphan["project"] is None and orphan["quota_bytes"] == 10 * MiB
        refused = admin.post(f"/api/v2/projects/{project}/cephfs-paths:adopt",
                             json={"name": name, "group": "csi", "path": "/volumes/csi/elsewhere"})
        assert refused.status_code == 400 and refused.json["error"]["code"] == "outside_project_directory"
        assert mgr("fs subvolume metadata get", sub_name=name, key_name=OWNER_KEY, group_name="csi") is None
        response = admin.post(f"/api/v2/projects/{project}/cephfs-paths:adopt",
                              json={"name": name, "group": "csi", "quota_bytes": 20 * MiB})
        assert response.status_code == 201, response.json
        assert response.json["path"] == mgr("fs subvolume getpath", sub_name=name, group_name="csi")
        assert mgr("fs subvolume info", sub_name=name, group_name="csi")["bytes_quota"] == 20 * MiB
        assert usage(admin, project)["provisioned_bytes"] == 20 * MiB
        [row] = db_rows(select(CephfsPath).where(CephfsPath.id == response.json["id"]))
        assert row.layout == "subvolume" and row.subvolume_group == "csi"
        assert finding(drift(admin), "orphan_subvolume", name) is None
        assert admin.post(f"{url(project, name)}/snapshots", json={"name": "s"}).status_code == 201
        assert snapshots(mgr, "csi", name) == {"s"}
        assert admin.delete(url(project, name), query_string={"with_snapshots": "true", "purge": "true"}) \
            .status_code == 204
        assert name not in subvolumes(mgr, "csi")
    finally:
        mgr("fs subvolume rm", sub_name=name, group_name="csi", force=True)


def test_adoption_refusals_change_nothing(admin, project, mgr, db_rows):
    no_quota, missing = unique("noq"), unique("none")
    mgr("fs subvolumegroup create", group_name=project)
    mgr("fs subvolume create", sub_name=no_quota, group_name=project)
    refused = admin.post(f"/api/v2/projects/{project}/cephfs-paths:adopt", json={"name": no_quota})
    assert refused.status_code == 422 and "quota_bytes" in refused.json["error"]["details"]["fields"]
    refused = admin.post(f"/api/v2/projects/{project}/cephfs-paths:adopt", json={"name": missing})
    assert refused.status_code == 404 and refused.json["error"]["code"] == "not_found_in_ceph"
    mgr("fs subvolume snapshot create", sub_name=no_quota, snap_name="kept", group_name=project)
    mgr("fs subvolume rm", sub_name=no_quota, group_name=project, retain_snapshots=True)
    refused = admin.post(f"/api/v2/projects/{project}/cephfs-paths:adopt", json={"name": no_quota,
                                                                                "quota_bytes": MiB})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "subvolume_not_adoptable"
    assert db_rows(select(CephfsPath).where(CephfsPath.name.in_([no_quota, missing]))) == []
    assert usage(admin, project)["volumes"] == 0
    mgr("fs subvolume snapshot rm", sub_name=no_quota, snap_name="kept", group_name=project)


# --- clones: `fs subvolume snapshot clone`, copied by the mgr in the background ------------------------------

@pytest.fixture()
def clone_delay(rados_cluster):
    """clone_delay(seconds): the mgr waits that long before copying each clone (its snapshot_clone_delay), so
    that a clone is seen, or canceled, while pending; back to no delay after the test."""
    def config(prefix: str, **args) -> None:
        ret, _, status = rados_cluster.mon_command(json.dumps({"prefix": prefix, "who": "mgr",
                                                               "name": "mgr/volumes/snapshot_clone_delay", **args}),
                                                   b"", timeout=60)
        assert ret == 0, status

    yield lambda seconds: config("config set", value=str(seconds))
    config("config rm")


def snapshotted(admin, project, fs, quota=64 * MiB) -> dict:
    """A subvolume holding a file, with the snapshot "s1" of it."""
    body = create(admin, project, quota_bytes=quota).json
    write(fs, f"{body['path']}/data", b"cloned bytes")
    assert admin.post(f"{url(project, body['name'])}/snapshots", json={"name": "s1"}).status_code == 201
    return body


def clone_of(admin, project, source: str, **body):
    body.setdefault("name", unique("clone"))
    return admin.post(url(project), json={"source": {"path": source, "snapshot": "s1"}, **body})


def test_a_member_cannot_clone_another_projects_snapshot_by_naming_it(as_role, admin, project, new_project, mgr,
                                                                       fs, db_rows):
    """The source is looked up among the caller's own project's volumes, from robin's rows: naming a neighbour's
    snapshotted subvolume finds nothing, and nothing is made, reserved or copied."""
    theirs = snapshotted(admin, project, fs)
    mine = new_project()
    attacker = as_role("member", mine)
    before = usage(admin, mine)
    refused = clone_of(attacker, mine, theirs["name"])  # the name alone: looked up in the attacker's project
    assert (refused.status_code, refused.json["error"]["code"]) == (404, "volume_not_found"), refused.json
    for source in (theirs["path"], f"../{project}/{theirs['name']}"):  # a path is no volume name at all
        refused = clone_of(attacker, mine, source)
        assert (refused.status_code, refused.json["error"]["code"]) == (422, "validation_error"), refused.json
    assert subvolumes(mgr, mine) == set() and usage(admin, mine) == before
    assert snapshots(mgr, project, theirs["name"]) == {"s1"}


def test_a_clone_is_creating_until_the_mgr_has_copied_it(admin, project, mgr, fs, clone_delay, db_rows):
    source = snapshotted(admin, project, fs)
    clone_delay(3)
    response = clone_of(admin, project, source["name"], quota_bytes=96 * MiB)
    assert response.status_code == 201, response.json
    body, name = response.json, response.json["name"]
    assert body["state"] == "creating" and body["layout"] == "subvolume"
    assert body["clone"]["source"] == {"path": source["name"], "snapshot": "s1"}
    assert body["clone"]["status"] in ("pending", "in-progress") and "progress" in body["clone"]
    # Its quota counts from the request on.
    assert usage(admin, project)["provisioned_bytes"] == (64 + 96) * MiB
    assert mgr("fs clone status", clone_name=name, group_name=project)["status"]["source"]["snapshot"] == "s1"
    row_ = row(db_rows, name)
    assert row_.state is VolumeState.CREATING and row_.clone_of == source["id"] and row_.clone_snapshot == "s1"
    # The source, or its snapshot, cannot go while it is copied.
    refused = admin.delete(url(project, source["name"]), query_string={"with_snapshots": "true"})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "volume_has_clones"
    assert refused.json["error"]["details"]["clones"] == [name]
    assert snapshots(mgr, project, source["name"]) == {"s1"}
    wait_until(lambda: admin.get(url(project, name)).json["state"] == "available", timeout=120,
               what="the mgr to complete the clone and a read to finish it")
    done = admin.get(url(project, name)).json
    path = mgr("fs subvolume getpath", sub_name=name, group_name=project)
    assert done["path"] == path and "clone" not in done and done["quota_bytes"] == 96 * MiB
    assert mgr("fs subvolume info", sub_name=name, group_name=project)["bytes_quota"] == 96 * MiB
    assert mgr("fs subvolume metadata get", sub_name=name, key_name=OWNER_KEY, group_name=project) == body["id"]
    handle = fs.open(f"{path}/data", "r", 0)
    try:
        assert fs.read(handle, 0, 64) == b"cloned bytes"
    finally:
        fs.close(handle)
    finished = row(db_rows, name)
    assert finished.state is VolumeState.AVAILABLE and finished.clone_of is None and finished.path == path
    # Standing alone now: the source goes, the clone stays.
    assert admin.delete(url(project, source["name"]), query_string={"with_snapshots": "true",
                                                                    "purge": "true"}).status_code == 204
    assert subvolumes(mgr, project) == {name}


def test_deleting_a_cloning_volume_cancels_the_clone(admin, project, mgr, fs, clone_delay, db_rows):
    source = snapshotted(admin, project, fs)
    # Short: on Ceph 16 the mgr's volumes module answers nothing else while a clone waits out its delay.
    clone_delay(2)
    name = clone_of(admin, project, source["name"]).json["name"]
    assert usage(admin, project)["provisioned_bytes"] == 128 * MiB
    deleted = admin.delete(url(project, name))
    assert deleted.status_code == 204, deleted.json
    assert subvolumes(mgr, project) == {source["name"]}
    gone = row(db_rows, name)
    assert gone.state is VolumeState.DELETED and gone.trash_ref is None and gone.purged_at
    assert usage(admin, project)["provisioned_bytes"] == 64 * MiB
    # Nothing holds the source's snapshot any more.
    assert admin.delete(f"{url(project, source['name'])}/snapshots/s1").status_code == 204
    assert snapshots(mgr, project, source["name"]) == set()


def test_a_clone_canceled_behind_robins_back_is_dropped_and_its_quota_released(app, admin, project, mgr, fs,
                                                                                clone_delay, db_rows):
    source = snapshotted(admin, project, fs)
    clone_delay(2)
    name = clone_of(admin, project, source["name"]).json["name"]
    mgr("fs clone cancel", clone_name=name, group_name=project)
    failed = admin.get(url(project, name))
    assert failed.status_code == 409 and failed.json["error"]["code"] == "clone_failed"
    assert failed.json["error"]["details"]["state"] == "canceled"
    assert admin.get(url(project, name)).status_code == 404
    assert subvolumes(mgr, project) == {source["name"]}
    assert db_rows(select(CephfsPath).where(CephfsPath.name == name)) == []
    assert usage(admin, project)["provisioned_bytes"] == 64 * MiB


def test_the_reconciler_finishes_a_clone_nobody_read(app, admin, project, mgr, fs, clone_delay, db_rows):
    source = snapshotted(admin, project, fs)
    clone_delay(1)
    name = clone_of(admin, project, source["name"]).json["name"]
    wait_until(lambda: mgr("fs clone status", clone_name=name, group_name=project)["status"]["state"] == "complete",
               timeout=120, what="the mgr to complete the clone")
    report = converge(app)
    assert {"kind": "clone_finished", "id": row(db_rows, name).id, "name": name} in report.fixed
    assert row(db_rows, name).state is VolumeState.AVAILABLE
    assert row(db_rows, name).path == mgr("fs subvolume getpath", sub_name=name, group_name=project)


@pytest.mark.parametrize("source, field, code", [
    ({"path": "nosuch", "snapshot": "s1"}, None, "volume_not_found"),
    ({"path": "SOURCE", "snapshot": "nosuch"}, "source", "validation_error"),
    ({"path": "SOURCE"}, "source", "validation_error"),
])
def test_bad_clone_requests_change_nothing(admin, project, mgr, fs, source, field, code):
    body = snapshotted(admin, project, fs)
    source = {key: body["name"] if value == "SOURCE" else value for key, value in source.items()}
    response = admin.post(url(project), json={"name": unique("clone"), "source": source})
    assert response.json["error"]["code"] == code, response.json
    if field:
        assert response.status_code == 422 and field in response.json["error"]["details"]["fields"]
    assert subvolumes(mgr, project) == {body["name"]} and usage(admin, project)["volumes"] == 1


def test_a_directory_is_not_cloned_and_a_clone_stays_on_its_file_system(admin, project, new_project, mgr, fs,
                                                                        monkeypatch, app):
    source = snapshotted(admin, project, fs)
    elsewhere = clone_of(admin, project, source["name"], fs="otherfs")
    assert elsewhere.status_code == 422
    over_quota = clone_of(admin, project, source["name"], quota_bytes=2 * GiB)
    assert over_quota.status_code == 403 and over_quota.json["error"]["code"] == "quota_exceeded"
    monkeypatch.setitem(app.config, "ROBIN_SETTINGS", dataclasses.replace(app.config["ROBIN_SETTINGS"],
                                                                          cephfs_layouts=()))
    directories = new_project(max_bytes=GiB)
    directory = create(admin, directories).json["name"]
    assert admin.post(f"{url(directories, directory)}/snapshots", json={"name": "s1"}).status_code == 201
    refused = clone_of(admin, directories, directory)
    assert refused.status_code == 400 and refused.json["error"]["code"] == "clone_not_supported"
    assert usage(admin, directories)["volumes"] == 1 and subvolumes(mgr, directories) == set()
    assert subvolumes(mgr, project) == {source["name"]} and usage(admin, project)["volumes"] == 1


def test_crash_after_the_clone_was_asked_for(app, admin, project, crash, mgr, fs, clone_delay, db_rows):
    source = snapshotted(admin, project, fs)
    clone_delay(1)
    name = unique("clone")
    crash("POST", url(project), json={"name": name, "source": {"path": source["name"], "snapshot": "s1"}})
    assert row(db_rows, name).state is VolumeState.CREATING
    wait_until(lambda: mgr("fs clone status", clone_name=name, group_name=project)["status"]["state"] == "complete",
               timeout=120, what="the mgr to complete the clone")
    converge(app)
    assert row(db_rows, name).state is VolumeState.AVAILABLE and usage(admin, project)["provisioned_bytes"] == \
        128 * MiB
