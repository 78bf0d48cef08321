"""The drift audit and adoption against real Ceph: drift made directly with the bindings behind
robin's back, every finding checked; orphans adopted and then taken through their lifecycle."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import timedelta

import cephfs
import pytest
import rados
import rbd
from sqlalchemy import delete, select, update

from robin import maintenance
from robin.audit import drift as drift_module
from robin.audit.models import DriftCount
from robin.ceph.cephfs_ops import OWNER_XATTR, QUOTA_XATTR
from robin.ceph.rbd_ops import DIRECTORY_OBJECT
from robin.db import db, utcnow
from robin.snapshots.models import Snapshot
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.conftest import unique
from tests.support.ceph_calls import ceph_calls

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30
ROOT = "/robin"


def mark(ioctx, name: str, owner: str) -> None:
    with rados.WriteOpCtx() as op:
        ioctx.set_omap(op, (name,), (owner.encode(),))
        ioctx.operate_write_op(op, DIRECTORY_OBJECT)


def owner_of(ioctx, name: str) -> str | None:
    with rados.ReadOpCtx() as op:
        values, _ = ioctx.get_omap_vals_by_keys(op, (name,))
        ioctx.operate_read_op(op, DIRECTORY_OBJECT)
        return dict(values).get(name, b"").decode() or None


def unmark(ioctx, name: str) -> None:
    with rados.WriteOpCtx() as op:
        ioctx.remove_omap_keys(op, (name,))
        ioctx.operate_write_op(op, DIRECTORY_OBJECT)


def drift(client, **query) -> dict:
    response = client.get("/api/v2/audit/drift", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def findings(report: dict, kind: str) -> list[dict]:
    return [finding["evidence"] | {"project": finding["project"]} for finding in report["findings"]
            if finding["kind"] == kind]


def by_name(report: dict, kind: str, name: str) -> dict:
    [found] = [evidence for evidence in findings(report, kind) if evidence["name"] == name]
    return found


def create_image(admin, project, name, size=64 * MiB):
    response = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": size})
    assert response.status_code == 201, response.json
    return response.json


def create_path(admin, project, name, quota=32 * MiB):
    response = admin.post(f"/api/v2/projects/{project}/cephfs-paths", json={"name": name, "quota_bytes": quota})
    assert response.status_code == 201, response.json
    return response.json


def remove_image(ioctx, name):
    try:
        with rbd.Image(ioctx, name) as image:
            for snap in list(image.list_snaps()):
                image.remove_snap(snap["name"])
        rbd.RBD().remove(ioctx, name)
    except rbd.ImageNotFound:
        pass


def remove_dir(fs, path):
    try:
        fs.rmdir(path)
    except cephfs.ObjectNotFound:
        pass


# --- findings ---------------------------------------------------------------------------------------

def test_every_kind_of_drift_is_found_with_its_evidence(admin, as_role, new_project, rbd_ioctx, fs, app):
    project = new_project()
    names = {key: unique(key) for key in ("foreign", "marked", "gone", "grown", "snaps", "trashed",
                                          "odir", "mdir", "fsgone", "fsquota", "top")}
    fake_owner = "00000000-0000-4000-8000-000000000000"
    rbd.RBD().create(rbd_ioctx, names["foreign"], 4 * MiB)
    rbd.RBD().create(rbd_ioctx, names["marked"], 4 * MiB)
    mark(rbd_ioctx, names["marked"], fake_owner)
    create_image(admin, project, names["gone"])
    rbd.RBD().remove(rbd_ioctx, names["gone"])
    create_image(admin, project, names["grown"])
    with rbd.Image(rbd_ioctx, names["grown"]) as image:
        image.resize(96 * MiB)
    create_image(admin, project, names["snaps"])
    assert admin.post(f"/api/v2/projects/{project}/rbd-images/{names['snaps']}/snapshots",
                      json={"name": "by-robin"}).status_code == 201
    with rbd.Image(rbd_ioctx, names["snaps"]) as image:
        image.create_snap("by-hand")
        image.remove_snap("by-robin")
    create_image(admin, project, names["trashed"])
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{names['trashed']}").status_code == 204
    with db.writing() as connection:
        connection.execute(update(RbdImage.__table__).where(RbdImage.name == names["trashed"]).values(
            purge_after=utcnow() - timedelta(hours=1)))
    project_dir = f"{ROOT}/{project}"
    create_path(admin, project, names["fsgone"])
    fs.rmdir(f"{project_dir}/{names['fsgone']}")
    create_path(admin, project, names["fsquota"])
    fs.setxattr(f"{project_dir}/{names['fsquota']}", QUOTA_XATTR, str(48 * MiB).encode(), 0)
    fs.mksnap(f"{project_dir}/{names['fsquota']}", "fs-by-hand", 0o755)
    fs.mkdir(f"{project_dir}/{names['odir']}", 0o755)
    fs.mkdir(f"{project_dir}/{names['mdir']}", 0o755)
    fs.setxattr(f"{project_dir}/{names['mdir']}", OWNER_XATTR, fake_owner.encode(), 0)
    fs.mkdir(f"{ROOT}/{names['top']}", 0o755)
    try:
        # Every image opened: each kind's evidence whatever else the session left in the pool. A bounded survey
        # (an auditor's) may defer the details of images past its budget, never the findings a listing shows.
        report = drift(admin, full="true")
        assert by_name(drift(as_role("auditor")), "orphan_image", names["foreign"])["pool"] == "rbd"
        assert by_name(report, "orphan_image", names["foreign"])["pool"] == "rbd"
        assert by_name(report, "orphan_image", names["foreign"])["size_bytes"] == 4 * MiB
        assert by_name(report, "orphan_robin_image", names["marked"])["owner"] == fake_owner
        assert not [e for e in findings(report, "orphan_image") if e["name"] == names["marked"]]
        gone = by_name(report, "missing_image", names["gone"])
        assert gone["project"] == project and gone["recorded_size_bytes"] == 64 * MiB and gone["cluster"] == "default"
        grown = by_name(report, "size_mismatch", names["grown"])
        assert (grown["recorded_size_bytes"], grown["found_size_bytes"]) == (64 * MiB, 96 * MiB)
        assert by_name(report, "snapshot_unknown_to_robin", names["snaps"])["snapshot"] == "by-hand"
        assert by_name(report, "snapshot_missing_in_ceph", names["snaps"])["snapshot"] == "by-robin"
        overdue = by_name(report, "trash_overdue", names["trashed"])
        assert overdue["project"] == project and overdue["trash_id"]
        assert by_name(report, "missing_directory", names["fsgone"])["path"] == f"{project_dir}/{names['fsgone']}"
        quota = by_name(report, "quota_mismatch", names["fsquota"])
        assert (quota["recorded_quota_bytes"], quota["found_quota_bytes"]) == (32 * MiB, 48 * MiB)
        unknown = [e for e in findings(report, "snapshot_unknown_to_robin") if e["name"] == names["fsquota"]]
        assert [(e["snapshot"], e["fs"]) for e in unknown] == [("fs-by-hand", "cephfs")]
        assert by_name(report, "orphan_directory", names["odir"])["project"] == project
        assert by_name(report, "orphan_robin_directory", names["mdir"])["owner"] == fake_owner
        assert by_name(report, "orphan_directory", names["top"])["path"] == f"{ROOT}/{names['top']}"
        assert not [e for e in report["findings"] if e["evidence"].get("path") == f"{ROOT}/.trash"]
        assert report["counts"]["size_mismatch"] >= 1 and set(report["counts"]) >= {"trash_overdue", "orphan_image"}
        only = drift(admin, kind="size_mismatch")
        assert {finding["kind"] for finding in only["findings"]} == {"size_mismatch"}
        # The reconciler reports the same findings as its drift, and touches none of them.
        from robin.reconcile.service import reconcile

        with app.app_context():
            reconciled = reconcile(timedelta(minutes=5)).drift
        assert {"kind", "project", "evidence"} == set(reconciled[0])
        assert any(f["kind"] == "orphan_image" and f["evidence"]["name"] == names["foreign"] for f in reconciled)
        assert names["foreign"] in rbd.RBD().list(rbd_ioctx)
        metrics = admin.get("/metrics").get_data(as_text=True)
        assert 'robin_drift_findings{kind="size_mismatch"}' in metrics
    finally:
        for key in ("foreign", "marked", "grown", "snaps"):
            remove_image(rbd_ioctx, names[key])
        unmark(rbd_ioctx, names["marked"])
        for entry in rbd.RBD().trash_list(rbd_ioctx):
            if entry["name"] == names["trashed"]:
                rbd.RBD().trash_remove(rbd_ioctx, entry["id"], force=True)
        fs.rmsnap(f"{project_dir}/{names['fsquota']}", "fs-by-hand")
        for path in (f"{project_dir}/{names['odir']}", f"{project_dir}/{names['mdir']}", f"{ROOT}/{names['top']}"):
            remove_dir(fs, path)


def scrape(admin) -> str:
    response = admin.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_scrape_reads_the_last_stored_survey_and_never_surveys(app, admin, new_project, rbd_ioctx):
    with db.unit_of_work() as session:
        session.execute(delete(DriftCount))  # as on a fresh install: no survey yet
    calls = ceph_calls()
    before = scrape(admin)
    assert ceph_calls() == calls  # the old scrape surveyed here: every image opened
    assert "robin_drift_findings{" not in before and "robin_drift_survey_age_seconds" not in before
    project = new_project()
    grown = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": unique("grown"), "size_bytes": MiB})
    with rbd.Image(rbd_ioctx, grown.json["name"]) as image:
        image.resize(2 * MiB)  # behind robin's back
    settings = app.config["ROBIN_SETTINGS"]
    interval = timedelta(seconds=settings.drift_interval)
    with app.app_context():
        app.config["ROBIN_SETTINGS"] = dataclasses.replace(settings, drift_interval=0)
        try:
            assert maintenance._survey_drift(app) == {}  # ROBIN_DRIFT_INTERVAL=0: the loop never surveys
        finally:
            app.config["ROBIN_SETTINGS"] = settings
        assert drift_module.last_survey_at() is None
        surveyed = maintenance._survey_drift(app)  # due: never surveyed
        assert surveyed["drift"] >= 1
        first = drift_module.last_survey_at()
        assert drift_module.survey_if_due(interval) is None  # not due again before the interval
        assert drift_module.last_survey_at() == first
    calls = ceph_calls()
    after = scrape(admin)
    assert ceph_calls() == calls
    counts = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in after.splitlines()
              if line.startswith("robin_drift_findings{")}
    assert set(counts) == set(drift_module.KINDS) and counts["size_mismatch"] >= 1
    [age] = [float(line.rsplit(" ", 1)[1]) for line in after.splitlines()
             if line.startswith("robin_drift_survey_age_seconds ")]
    assert 0 <= age < interval.total_seconds()
    with app.app_context():
        assert drift_module.survey_if_due(timedelta(0)) is not None  # due at once: surveyed again
        assert drift_module.last_survey_at() > first
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{grown.json['name']}").status_code == 204


def test_young_transitional_rows_are_not_reported(admin, new_project, rbd_ioctx):
    project, name = new_project(), unique("busy")
    create_image(admin, project, name)
    with db.writing() as connection:
        connection.execute(update(RbdImage.__table__).where(RbdImage.name == name).values(
            state=VolumeState.RESIZING, target_size_bytes=128 * MiB, updated_at=utcnow()))
    rbd.RBD().remove(rbd_ioctx, name)
    try:
        assert not [e for e in findings(drift(admin), "missing_image") if e["name"] == name]
        assert by_name(drift(admin, older_than=0), "missing_image", name)["state"] == "resizing"
    finally:  # a row the reconciler could never settle would stay in every later report
        with db.writing() as connection:
            connection.execute(delete(RbdImage.__table__).where(RbdImage.name == name))


@pytest.mark.parametrize("older_than", ["2.5e16", "1e300", "-1", "nan", "inf"])
def test_older_than_no_date_can_be_is_a_422_for_every_role(admin, as_role, new_project, older_than):
    # 2.5e16 seconds overflowed the timedelta before any permission check: a 500, for members too.
    for client in (admin, as_role("member", new_project())):
        response = client.get(f"/api/v2/audit/drift?older_than={older_than}")
        assert response.status_code == 422, response.json
        assert "older_than" in response.json["error"]["details"]["fields"]


def test_roles(as_role, new_project):
    project = new_project()
    assert as_role("member", project).get("/api/v2/audit/drift").status_code == 403
    for role in ("member", "auditor"):
        client = as_role(role, project if role == "member" else None)
        response = client.post(f"/api/v2/projects/{project}/rbd-images:adopt", json={"name": "x"})
        assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"


# --- adoption ----------------------------------------------------------------------------------------

def test_adopt_an_image_then_its_whole_lifecycle(admin, new_project, rbd_ioctx, db_rows):
    project, name = new_project(max_snapshots=5), unique("adopt")
    rbd.RBD().create(rbd_ioctx, name, 64 * MiB, old_format=False,
                     features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK)
    with rbd.Image(rbd_ioctx, name) as image:
        image.create_snap("before")
    base = f"/api/v2/projects/{project}/rbd-images"
    try:
        response = admin.post(f"{base}:adopt", json={"name": name, "pool": "rbd"})
        assert response.status_code == 201, response.json
        adopted = response.json
        assert adopted["size_bytes"] == 64 * MiB and adopted["state"] == "available"
        assert adopted["features"] == ["layering", "exclusive-lock"] and adopted["parent"] is None
        assert admin.get(f"{base}/{name}").json == adopted
        assert owner_of(rbd_ioctx, name) == adopted["id"]
        assert [s["name"] for s in admin.get(f"{base}/{name}/snapshots").json["items"]] == ["before"]
        usage = admin.get(f"/api/v2/projects/{project}/usage").json
        assert usage["provisioned_bytes"] == 64 * MiB and usage["volumes"] == 1
        assert not [e for e in findings(drift(admin), "orphan_image") if e["name"] == name]
        again = admin.post(f"{base}:adopt", json={"name": name})
        assert again.status_code == 409 and again.json["error"]["code"] == "already_managed"

        assert admin.patch(f"{base}/{name}", json={"size_bytes": 128 * MiB}).status_code == 200
        with rbd.Image(rbd_ioctx, name, read_only=True) as image:
            assert image.size() == 128 * MiB
        assert admin.post(f"{base}/{name}/snapshots", json={"name": "after"}).status_code == 201
        clone = unique("clone")
        response = admin.post(base, json={"name": clone, "source": {"image": name, "snapshot": "before"}})
        assert response.status_code == 201, response.json
        assert admin.delete(f"{base}/{clone}?purge=true").status_code == 204
        assert admin.delete(f"{base}/{name}?with_snapshots=true").status_code == 204
        assert name not in rbd.RBD().list(rbd_ioctx)
        assert name in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
        assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0
    finally:
        remove_image(rbd_ioctx, name)


def test_adoption_refusals_change_nothing(admin, new_project, rbd_ioctx, db_rows):
    small = new_project(max_bytes=32 * MiB)
    no_snapshots = new_project(max_snapshots=0)
    name, parent, clone = unique("big"), unique("parent"), unique("clone")
    rbd.RBD().create(rbd_ioctx, name, 64 * MiB, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    rbd.RBD().create(rbd_ioctx, parent, 8 * MiB, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    try:
        response = admin.post(f"/api/v2/projects/{small}/rbd-images:adopt", json={"name": name})
        assert response.status_code == 403 and response.json["error"]["code"] == "quota_exceeded"
        with rbd.Image(rbd_ioctx, name) as image:
            image.resize(8 * MiB)
            image.create_snap("s")
        response = admin.post(f"/api/v2/projects/{no_snapshots}/rbd-images:adopt", json={"name": name})
        assert response.status_code == 403 and response.json["error"]["code"] == "quota_exceeded"
        assert db_rows(select(RbdImage).where(RbdImage.name == name)) == []
        assert db_rows(select(Snapshot).where(Snapshot.rbd_image.has(name=name))) == []
        assert owner_of(rbd_ioctx, name) is None

        with rbd.Image(rbd_ioctx, parent) as image:
            image.create_snap("base")
        rbd.RBD().clone(rbd_ioctx, parent, "base", rbd_ioctx, clone, features=rbd.RBD_FEATURE_LAYERING)
        response = admin.post(f"/api/v2/projects/{small}/rbd-images:adopt", json={"name": clone})
        assert response.status_code == 409 and response.json["error"]["code"] == "clone_not_adoptable"
        response = admin.post(f"/api/v2/projects/{small}/rbd-images:adopt", json={"name": unique("none")})
        assert response.status_code == 404 and response.json["error"]["code"] == "not_found_in_ceph"
        response = admin.post(f"/api/v2/projects/{small}/rbd-images:adopt", json={"name": name, "pool": "other"})
        assert response.status_code == 422
    finally:
        remove_image(rbd_ioctx, clone)
        remove_image(rbd_ioctx, parent)
        remove_image(rbd_ioctx, name)


def test_adopt_cephfs_directories(admin, new_project, fs, db_rows):
    project = new_project()
    base = f"/api/v2/projects/{project}/cephfs-paths"
    with_quota, without, elsewhere = unique("q"), unique("noq"), unique("far")
    fs.mkdirs(f"{ROOT}/{project}/{with_quota}", 0o755)
    fs.setxattr(f"{ROOT}/{project}/{with_quota}", QUOTA_XATTR, str(16 * MiB).encode(), 0)
    fs.mksnap(f"{ROOT}/{project}/{with_quota}", "old", 0o755)
    fs.mkdir(f"{ROOT}/{project}/{without}", 0o755)
    fs.mkdir(f"{ROOT}/{elsewhere}", 0o755)
    try:
        response = admin.post(f"{base}:adopt", json={"name": with_quota})
        assert response.status_code == 201, response.json
        assert response.json["quota_bytes"] == 16 * MiB and response.json["path"] == f"{ROOT}/{project}/{with_quota}"
        path = response.json["path"]
        assert fs.getxattr(path, OWNER_XATTR).decode() == response.json["id"]
        assert [s["name"] for s in admin.get(f"{base}/{with_quota}/snapshots").json["items"]] == ["old"]

        response = admin.post(f"{base}:adopt", json={"name": without})
        assert response.status_code == 422 and "quota_bytes" in response.json["error"]["details"]["fields"]
        response = admin.post(f"{base}:adopt", json={"name": without, "quota_bytes": 8 * MiB})
        assert response.status_code == 201 and response.json["quota_bytes"] == 8 * MiB
        assert fs.getxattr(f"{ROOT}/{project}/{without}", QUOTA_XATTR).decode() == str(8 * MiB)

        response = admin.post(f"{base}:adopt", json={"name": elsewhere, "path": f"{ROOT}/{elsewhere}"})
        assert response.status_code == 400 and response.json["error"]["code"] == "outside_project_directory"

        assert admin.patch(f"{base}/{with_quota}", json={"quota_bytes": 24 * MiB}).status_code == 200
        assert fs.getxattr(path, QUOTA_XATTR).decode() == str(24 * MiB)
        assert admin.post(f"{base}/{with_quota}/snapshots", json={"name": "new"}).status_code == 201
        assert admin.delete(f"{base}/{with_quota}?with_snapshots=true&purge=true").status_code == 204
        assert admin.delete(f"{base}/{without}?purge=true").status_code == 204
        [row] = db_rows(select(CephfsPath).where(CephfsPath.name == with_quota))
        assert row.state is VolumeState.DELETED
    finally:
        remove_dir(fs, f"{ROOT}/{elsewhere}")


def run_cli(settings, *args):
    env = {**os.environ, "ROBIN_DATABASE_URL": settings.database_url, "ROBIN_CEPH_CONF": settings.ceph_conf,
           "ROBIN_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "robin.cli", "audit", "drift", "--direct", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_dry_run_then_bulk_adoption(app, settings, admin, new_project, rbd_ioctx, db_rows):
    """Bulk adoption takes every orphan of the cluster, other tests' too: the CLI runs it against a
    project with no room (each refused on its own, nothing changed); the planned adoption of this
    test's own orphans runs in-process."""
    from robin.auth.identity import LOCAL_ADMIN
    from robin.volumes import adoption

    project, full = new_project(), new_project(max_volumes=0)
    names = [unique("bulk"), unique("bulk")]
    for name in names:
        rbd.RBD().create(rbd_ioctx, name, 4 * MiB, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    try:
        dry = run_cli(settings, "--json", "--adopt-into", project)
        assert dry.returncode == 0, dry.stderr
        planned = {step["name"]: step for step in json.loads(dry.stdout)["orphans"]}
        assert all("refused" not in planned[name] and planned[name]["collection"] == "rbd-images" for name in names)
        assert json.loads(dry.stdout)["dry_run"] is True

        refused = run_cli(settings, "--adopt-into", full, "--yes")
        assert refused.returncode == 1
        assert all(f"{name}: refused: project {full!r} may have 0 volumes" in refused.stdout for name in names)
        assert db_rows(select(RbdImage).where(RbdImage.name.in_(names))) == []

        with app.app_context():
            steps = [step for step in adoption.plan(drift(admin)["findings"], project) if step["name"] in names]
            results = adoption.adopt_planned(LOCAL_ADMIN, project, steps)
        assert [result.get("adopted") for result in results] == [True, True]
        rows = db_rows(select(RbdImage).where(RbdImage.name.in_(names)))
        assert {row.name for row in rows} == set(names) and {row.project.name for row in rows} == {project}

        report = run_cli(settings)
        assert report.returncode == 0 and not any(name in report.stdout for name in names)
    finally:
        for name in names:
            admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}?purge=true")
            remove_image(rbd_ioctx, name)


# --- what a survey costs ----------------------------------------------------------------------------

OPERATIONS = ("rbd.list_pool", "rbd.header_signatures", "rbd.describe")


def survey(app, admin, opens: int | None, **query) -> tuple[dict, dict]:
    """A survey through the API with ROBIN_DRIFT_OPENS = opens; its report and its RBD calls by operation."""
    settings = app.config["ROBIN_SETTINGS"]
    before = {operation: ceph_calls(operation) for operation in OPERATIONS}
    app.config["ROBIN_SETTINGS"] = dataclasses.replace(settings, drift_opens=opens or settings.drift_opens)
    try:
        report = drift(admin, **query)
    finally:
        app.config["ROBIN_SETTINGS"] = settings
    return report, {operation: ceph_calls(operation) - before[operation] for operation in OPERATIONS}


def names_of(report: dict, kind: str, names) -> set[str]:
    return {evidence["name"] for evidence in findings(report, kind) if evidence["name"] in names}


def test_a_survey_opens_at_most_its_limit_changed_images_first(app, admin, new_project, rbd_ioctx):
    project = new_project()
    names = [unique("fleet") for _ in range(16)]
    for name in names:
        create_image(admin, project, name, size=MiB)
    full, calls = survey(app, admin, None, full="true")  # every image of the pool checked now
    assert calls["rbd.describe"] == full["coverage"]["rbd_images"] >= len(names)
    assert full["coverage"]["deferred"] == 0 and full["coverage"]["open_limit"] is None

    quiet, calls = survey(app, admin, 8)
    assert calls == {"rbd.list_pool": 1, "rbd.header_signatures": 1, "rbd.describe": 8}  # not one per image
    assert quiet["coverage"] | {"rbd_images": 0} == {"rbd_images": 0, "opened": 8, "deferred": 0,
                                                     "from_last_check": full["coverage"]["rbd_images"] - 8,
                                                     "open_limit": 8}

    grown, snapped = names[:10], names[10]
    for name in grown:  # ten changes behind robin's back, more than a survey of 8 opens takes
        with rbd.Image(rbd_ioctx, name) as image:
            image.resize(2 * MiB)
    with rbd.Image(rbd_ioctx, snapped) as image:
        image.create_snap("by-hand")
    first, calls = survey(app, admin, 8)
    assert calls["rbd.describe"] == 8 and first["coverage"]["deferred"] == 11 - 6  # 2 of 8 kept for the oldest
    found = names_of(first, "size_mismatch", grown) | names_of(first, "snapshot_unknown_to_robin", [snapped])
    assert len(found) == 6
    second, calls = survey(app, admin, 8)
    assert calls["rbd.describe"] == 8 and second["coverage"]["deferred"] == 0
    assert names_of(second, "size_mismatch", grown) == set(grown)  # the first's from their last check
    assert names_of(second, "snapshot_unknown_to_robin", [snapped]) == {snapped}
    for name in names:
        with rbd.Image(rbd_ioctx, name) as image:
            for snap in image.list_snaps():
                image.remove_snap(snap["name"])
        assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}?purge=true").status_code == 204


def test_unchanged_images_are_reopened_in_turn(app, admin, new_project, rbd_ioctx):
    """What the header does not show is found all the same, once the image's turn to be reopened comes:
    here a check altered in the table stands for it."""
    from robin.audit.models import DriftImageCheck

    project, name = new_project(), unique("turn")
    create_image(admin, project, name, size=MiB)
    survey(app, admin, None, full="true")
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        image_id = image.id()
    with db.unit_of_work() as session:
        check = session.scalars(select(DriftImageCheck).where(DriftImageCheck.image_id == image_id)).one()
        check.details = {**check.details, "size_bytes": 3 * MiB}
    report, calls = survey(app, admin, 4)
    images = report["coverage"]["rbd_images"]
    surveys = 1
    while name in names_of(report, "size_mismatch", [name]):  # from the altered check, until reopened
        assert surveys <= -(-images // 4), "every image is reopened within ceil(images / limit) quiet surveys"
        report, calls = survey(app, admin, 4)
        assert calls["rbd.describe"] == 4
        surveys += 1
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}?purge=true").status_code == 204


def test_a_full_survey_is_for_admins(as_role):
    response = as_role("auditor").get("/api/v2/audit/drift?full=true")
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
