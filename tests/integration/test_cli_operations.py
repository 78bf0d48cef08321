"""The operator's commands, run as an operator runs them: the installed `robin` program in a subprocess, on the
session's database and Ceph cluster, checked in both. `token revoke`, `purge`, `reconcile`, `dev-cluster up/down`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import rados
import rbd
from sqlalchemy import select, update

from robin.auth.models import ApiToken, Role
from robin.auth.service import create_token
from robin.db import db, utcnow
from robin.volumes.models import CephfsPath, RbdImage
from tests.conftest import cephfs_exists, unique
from tests.support.server import SESSION_SECRET_KEY

pytestmark = pytest.mark.integration
MiB = 2**20
# The console script the package installs, beside this interpreter: the command line, not the module behind it.
ROBIN = str(Path(sys.executable).with_name("robin"))
DEV_CLUSTER_TIMEOUT_S = 600  # a whole cluster's start on a loaded machine


@pytest.fixture()
def robin(database_url, ceph_conf, tmp_path):
    """robin(*args) -> the finished process, configured as the session's own app is."""
    env = {**os.environ, "ROBIN_DATABASE_URL": database_url, "ROBIN_CEPH_CONF": ceph_conf,
           "ROBIN_SECRET_KEY": SESSION_SECRET_KEY, "ROBIN_STATE_DIR": str(tmp_path / "state"),
           "ROBIN_LOG_LEVEL": "WARNING"}

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([ROBIN, *args], env=env, capture_output=True, text=True, timeout=timeout)

    return run


# --- token revoke ----------------------------------------------------------------------------------

def test_token_revoke_ends_the_token(app, robin, new_project):
    project = new_project()
    with app.app_context():
        secret, token = create_token(Role.MEMBER, project=project, name="to-revoke")
    headers = {"Authorization": f"Bearer {secret}"}
    assert app.test_client().get(f"/api/v2/projects/{project}", headers=headers).status_code == 200
    revoked = robin("token", "revoke", "--direct", str(token.id))
    assert revoked.returncode == 0, revoked.stderr
    # The command returned once every process's cache had forgotten the token (it waits the cache's TTL out).
    response = app.test_client().get(f"/api/v2/projects/{project}", headers=headers)
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthenticated"
    listing = json.loads(robin("token", "list", "--direct", "-o", "json").stdout)
    [listed] = [row for row in listing if row["id"] == token.id]
    assert listed["revoked_at"] is not None


def _tokens() -> list[tuple]:
    with db.reading() as session:
        return [tuple(row) for row in session.execute(select(ApiToken.id, ApiToken.revoked_at).order_by(ApiToken.id))]


def test_token_revoke_of_an_unknown_id_fails_and_changes_nothing(app, robin):
    before = _tokens()
    unknown = max((token_id for token_id, _ in before), default=0) + 1000
    result = robin("token", "revoke", "--direct", str(unknown))
    assert result.returncode == 1
    assert f"token {unknown} does not exist" in result.stderr and result.stdout == ""
    assert _tokens() == before


# --- purge -----------------------------------------------------------------------------------------

def _due_now(model, name: str) -> None:
    """As if the volume's time in the trash were over."""
    with db.writing() as connection:
        connection.execute(update(model).where(model.name == name, model.purged_at.is_(None))
                           .values(purge_after=utcnow() - timedelta(seconds=1)))


def test_purge_removes_what_is_due_and_keeps_the_rest(robin, admin, new_project, rbd_ioctx, fs, settings, db_rows):
    project = new_project()
    images, paths = f"/api/v2/projects/{project}/rbd-images", f"/api/v2/projects/{project}/cephfs-paths"
    due_image, kept_image, due_path = unique("due"), unique("kept"), unique("due")
    for name in (due_image, kept_image):
        assert admin.post(images, json={"name": name, "size_bytes": 8 * MiB}).status_code == 201
        assert admin.delete(f"{images}/{name}").status_code == 204
    assert admin.post(paths, json={"name": due_path, "quota_bytes": 8 * MiB}).status_code == 201
    assert admin.delete(f"{paths}/{due_path}").status_code == 204
    [trashed_path] = db_rows(select(CephfsPath.trash_ref).where(CephfsPath.name == due_path))
    assert cephfs_exists(fs, trashed_path)
    _due_now(RbdImage, due_image)
    _due_now(CephfsPath, due_path)

    result = robin("purge")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["purged"] >= 2 and counts["failed"] == 0

    in_trash = {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    assert due_image not in in_trash and kept_image in in_trash
    assert not cephfs_exists(fs, trashed_path)
    [purged] = db_rows(select(RbdImage).where(RbdImage.name == due_image))
    [kept] = db_rows(select(RbdImage).where(RbdImage.name == kept_image))
    assert purged.purged_at is not None and kept.purged_at is None
    assert [item["name"] for item in admin.get(images, query_string={"trashed": "true"}).json["items"]] == [
        kept_image]
    assert admin.post(f"{images}/{kept_image}/restore").status_code == 200


# --- reconcile -------------------------------------------------------------------------------------

def test_reconcile_undoes_a_create_that_never_reached_ceph(app, robin, admin, new_project, rbd_ioctx, db_rows):
    """A row left in `creating`, as by a worker that died between its first commit and the Ceph call."""
    from robin.volumes import service
    from robin.volumes.kinds import RBD

    project, name = new_project(), unique("img")
    with app.app_context():
        service.reserve_new(RBD, project, {"name": name, "size_bytes": 64 * MiB},
                            RBD.placement({"name": name}, project))
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 64 * MiB

    result = robin("reconcile", "--older-than", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [entry["kind"] for entry in report["fixed"] if entry.get("name") == name] == ["create_undone"]
    assert db_rows(select(RbdImage).where(RbdImage.name == name)) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0
    assert name not in rbd.RBD().list(rbd_ioctx)


def test_reconcile_reports_drift_and_leaves_it_alone(robin, rbd_ioctx):
    orphan = unique("orphan")
    rbd.RBD().create(rbd_ioctx, orphan, MiB)
    try:
        result = robin("reconcile", "--older-than", "0")
        assert result.returncode == 0, result.stderr
        lines = [line.split() for line in result.stdout.splitlines()]
        assert ["drift", "orphan_image"] in [line[:2] for line in lines if f"name={orphan}" in line]
        assert result.stderr.strip().endswith("errors")
        assert orphan in rbd.RBD().list(rbd_ioctx)
    finally:
        rbd.RBD().remove(rbd_ioctx, orphan)


# --- dev-cluster -----------------------------------------------------------------------------------

def test_dev_cluster_up_serves_ceph_and_down_removes_it(robin):
    # A short path: the daemons' unix sockets live under it.
    directory = tempfile.mkdtemp(prefix="rdv", dir="/tmp")
    try:
        up = robin("dev-cluster", "up", "--dir", directory, timeout=DEV_CLUSTER_TIMEOUT_S)
        assert up.returncode == 0, up.stderr
        conf = up.stdout.strip()
        assert Path(conf).is_file() and conf.startswith(directory)
        status = robin("dev-cluster", "status", "--dir", directory)
        assert status.returncode == 0 and json.loads(status.stdout)["healthy"] is True, status.stdout
        cluster = rados.Rados(conffile=conf)
        cluster.connect(timeout=30)
        try:
            assert {"rbd", "cephfs_data", "cephfs_metadata"} <= set(cluster.list_pools())
        finally:
            cluster.shutdown()
        again = robin("dev-cluster", "up", "--dir", directory, timeout=DEV_CLUSTER_TIMEOUT_S)
        assert (again.returncode, again.stdout) == (0, up.stdout)  # a healthy cluster is reused
    finally:
        down = robin("dev-cluster", "down", "--dir", directory, timeout=DEV_CLUSTER_TIMEOUT_S)
    assert down.returncode == 0, down.stderr
    assert not Path(directory).exists()
    stopped = robin("dev-cluster", "status", "--dir", directory)
    assert stopped.returncode == 1
