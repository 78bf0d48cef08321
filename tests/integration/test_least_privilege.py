"""robin on a cluster it did not create, as the cephx users docs/existing-cluster.md makes instead of client.admin.

The users are made by running the page's marked code blocks (```sh cephx-api, cephx-node) on the
dev cluster, so the page and this test cannot drift apart; they are deleted at the end. robin reaches the same dev
cluster through a second registered cluster entry holding client.robin's key: volumes placed there are made,
changed, trashed, measured, surveyed and reconciled as client.robin and checked in Ceph itself (as admin). A
node-only CSI plugin stages volumes with client.robin-node's key, the gateway CephFS paths with their own users. A
user with a cap less, or a wrong key, gets ceph_permission_denied, and nothing is left behind.
"""
from __future__ import annotations

import configparser
import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import rados
import rbd
from sqlalchemy import select

from csi_shim.stubs import pb
from robin import mounts
from robin.audit import usage
from robin.ceph import CephError, cephfs_ops
from robin.ceph.errors import CephPermissionDenied
from robin.client import VolumeRef, volume_context
from robin.clusters import service as clusters
from robin.db import db, utcnow
from robin.errors import api_error
from robin.gateway import mounting
from robin.projects.models import Project
from robin.reconcile.service import reconcile
from robin.volumes import service as volumes
from robin.volumes.kinds import CEPHFS, RBD
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.conftest import Api, cephfs_exists, unique
from tests.csi.test_node import force_clean, leftovers, mounted
from tests.support.csi import ShimProcess, mount_capability
from tests.support.mounts import read, write

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30
DOC = Path(__file__).resolve().parents[2] / "docs" / "existing-cluster.md"
ROOT = "/robin"  # the page's ROOT, robin's default ROBIN_CEPHFS_ROOT
EXT4_MAGIC_AT, EXT4_MAGIC = 1024 + 0x38, b"\x53\xef"


# --- the page's commands ----------------------------------------------------------------------------------------

def documented(tag: str) -> str:
    """The code block of the page whose info string is `sh <tag>`."""
    found = re.findall(rf"^( *)```sh {re.escape(tag)}\n(.*?)^ *```", DOC.read_text(), re.M | re.S)
    assert len(found) == 1, f"{DOC} has {len(found)} blocks tagged {tag}"
    indent, block = found[0]
    return "\n".join(line.removeprefix(indent) for line in block.splitlines())


def run_documented(script: str, ceph_conf: str, directory: str) -> None:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=directory, capture_output=True, text=True,
                          env={**os.environ, "CEPH_CONF": ceph_conf}, timeout=120)
    assert done.returncode == 0, f"{script}\n{done.stdout}{done.stderr}"


def ceph(ceph_conf: str, *args: str) -> str:
    done = subprocess.run(["ceph", "--conf", ceph_conf, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"ceph {' '.join(args)}: {done.stderr}"
    return done.stdout


def keyring_key(path: Path, entity: str) -> str:
    keyring = configparser.ConfigParser()
    keyring.read(path)
    return keyring[entity]["key"]


def mon_host(ceph_conf: str) -> str:
    conf = configparser.ConfigParser(strict=False)
    conf.read(ceph_conf)
    return conf["global"]["mon host"]


def without_quota_cap(api_script: str) -> str:
    """client.robin's command, made for client.robin-limited with two caps less: none on robin's pool (a pool it
    does not know instead) and `rws` instead of `rwps` below the root (no quotas)."""
    limited = api_script.replace("client.robin ", "client.robin-limited ").replace("pool=$POOL", "pool=robin-none")
    limited = limited.replace("allow rwps", "allow rws").replace("ceph.client.robin.keyring",
                                                                 "ceph.client.robin-limited.keyring")
    assert limited.count("robin-limited") == 2 and "rws " in limited and "robin-none" in limited
    return limited


# --- fixtures -----------------------------------------------------------------------------------------------------

class Site:
    """The users made by the page's commands, the cluster entries robin reaches the dev cluster by with them, and
    a project on which every volume of this module lives."""

    def __init__(self, api: Api, project: str, robin: str, limited: str, keys: dict[str, str]):
        self.api, self.project, self.robin, self.limited, self.keys = api, project, robin, limited, keys

    def url(self, kind: str, name: str = "") -> str:
        collection = {"rbd": "rbd-images", "cephfs": "cephfs-paths"}[kind]
        return f"/api/v2/projects/{self.project}/{collection}" + (f"/{name}" if name else "")

    def create(self, kind: str, cluster: str, size: int = 64 * MiB, **spec):
        size_field = "size_bytes" if kind == "rbd" else "quota_bytes"
        return self.api.post(self.url(kind), json={"name": unique(kind), size_field: size, "cluster": cluster,
                                                   **spec})

    def usage(self) -> dict:
        """What the project holds, without the age of its usage figures (that grows with the clock alone)."""
        body = self.api.get(f"/api/v2/projects/{self.project}/usage").json
        del body["age_seconds"]
        return body


@pytest.fixture(scope="module")
def site(app, admin_token, ceph_conf, fs):
    api = Api(app.test_client(), admin_token)
    fs.mkdirs(ROOT, 0o755)  # the administrator's step: robin's user cannot make its own root
    directory = tempfile.mkdtemp(prefix="cephx")
    users = ["client.robin", "client.robin-node", "client.robin-limited"]
    registered, project = [], unique("lp")
    try:
        run_documented(documented("cephx-api"), ceph_conf, directory)
        run_documented(documented("cephx-node"), ceph_conf, directory)
        run_documented(without_quota_cap(documented("cephx-api")), ceph_conf, directory)
        keys = {user: keyring_key(Path(directory) / f"ceph.{user}.keyring", user) for user in users}
        for user in ("client.robin", "client.robin-limited"):
            name = unique("lp")
            response = api.post("/api/v2/clusters", json={"name": name, "mon_host": mon_host(ceph_conf),
                                                           "client_id": user.removeprefix("client."),
                                                           "key": keys[user]})
            assert response.status_code == 201, response.json
            registered.append(name)
        response = api.post("/api/v2/projects", json={"name": project, "quota": {
            "max_bytes": 8 * GiB, "max_volumes": 20, "max_snapshots": 20}})
        assert response.status_code == 201, response.json
        yield Site(api, project, registered[0], registered[1], keys)
    finally:
        _remove_project(app, api, project)
        for name in registered:
            assert api.delete(f"/api/v2/clusters/{name}").status_code in (204, 404)
        for user in users:
            subprocess.run(["ceph", "--conf", ceph_conf, "auth", "del", user], capture_output=True, timeout=60)
        shutil.rmtree(directory)  # the keyrings


def _remove_project(app, api: Api, project: str) -> None:
    """Purge what the tests left (live volumes, clones first, and the trash), then the project and its rows."""
    for collection, model in (("rbd-images", RbdImage), ("cephfs-paths", CephfsPath)):
        live = [row for row in _rows(app, model, project) if row.state != VolumeState.DELETED]
        for row in sorted(live, key=lambda row: getattr(row, "parent_id", None) is None):
            api.delete(f"/api/v2/projects/{project}/{collection}/{row.name}",
                       query_string={"purge": "true", "with_snapshots": "true"})
    purge_all_due(app)
    api.delete(f"/api/v2/projects/{project}")


def _rows(app, model, project: str) -> list:
    with app.app_context(), db.reading() as session:
        return list(session.scalars(select(model).join(Project, Project.id == model.project_id)
                                    .where(Project.name == project)))


def robin_user_of(app, cluster: str) -> str:
    with app.app_context(), db.reading() as session:
        return clusters.resolve(session, cluster).client_id


# --- the core flows as client.robin --------------------------------------------------------------------------------

def test_the_cluster_entry_connects_as_robins_own_user(app, site):
    assert robin_user_of(app, site.robin) == "robin"
    detail = site.api.get(f"/api/v2/clusters/{site.robin}").json
    assert detail["reachable"] is True, detail
    assert "rbd" in detail["pools"] and detail["filesystems"] == ["cephfs"] and detail["monitors"]


def test_rbd_create_resize_snapshot_rollback_and_clone(site, rbd_ioctx):
    created = site.create("rbd", site.robin)
    assert created.status_code == 201, created.json
    name = created.json["name"]
    assert created.json["cluster"] == site.robin
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == 64 * MiB
    resized = site.api.patch(site.url("rbd", name), json={"size_bytes": 128 * MiB})
    assert resized.status_code == 200, resized.json
    with rbd.Image(rbd_ioctx, name) as image:
        assert image.size() == 128 * MiB
        image.write(b"before", 0)
    snapshots = site.url("rbd", name) + "/snapshots"
    assert site.api.post(snapshots, json={"name": "gold"}).status_code == 201
    with rbd.Image(rbd_ioctx, name) as image:
        assert [snap["name"] for snap in image.list_snaps()] == ["gold"]
        image.write(b"after!", 0)
    rolled = site.api.post(f"{snapshots}/gold/rollback")
    assert rolled.status_code == 200, rolled.json
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.read(0, 6) == b"before"
    clone = site.api.post(site.url("rbd"), json={"name": unique("clone"), "cluster": site.robin,
                                                 "source": {"image": name, "snapshot": "gold"}})
    assert clone.status_code == 201, clone.json
    with rbd.Image(rbd_ioctx, clone.json["name"], read_only=True) as image:
        assert image.parent_info()[1:] == (name, "gold") and image.read(0, 6) == b"before"
    flattened = site.api.post(site.url("rbd", clone.json["name"]) + "/flatten")
    assert flattened.status_code == 200, flattened.json
    with rbd.Image(rbd_ioctx, clone.json["name"], read_only=True) as image:
        with pytest.raises(rbd.ImageNotFound):
            image.parent_info()


def purge_all_due(app) -> None:
    """The maintenance loop's purge, run as if the purge time of everything in the trash had come."""
    with app.app_context():
        volumes.purge_due(utcnow() + timedelta(days=365))


def trash_names(ioctx) -> set[str]:
    return {entry["name"] for entry in rbd.RBD().trash_list(ioctx)}


def test_rbd_trash_delete_restore_and_purge(app, site, rbd_ioctx):
    name = site.create("rbd", site.robin).json["name"]
    assert site.api.delete(site.url("rbd", name)).status_code == 204
    assert name in trash_names(rbd_ioctx) and name not in rbd.RBD().list(rbd_ioctx)
    restored = site.api.post(site.url("rbd", name) + "/restore")
    assert restored.status_code == 200, restored.json
    assert name in rbd.RBD().list(rbd_ioctx) and name not in trash_names(rbd_ioctx)
    assert site.api.delete(site.url("rbd", name)).status_code == 204
    purge_all_due(app)
    assert name not in trash_names(rbd_ioctx) and name not in rbd.RBD().list(rbd_ioctx)
    [row] = [row for row in _rows(app, RbdImage, site.project) if row.name == name]
    assert row.purged_at is not None and row.trash_ref is None


def test_cephfs_path_with_quota_snapshot_and_trash(app, site, fs):
    created = site.create("cephfs", site.robin, size=256 * MiB)
    assert created.status_code == 201, created.json
    name, path = created.json["name"], created.json["path"]
    assert path == f"{ROOT}/{site.project}/{name}"
    assert fs.getxattr(path, "ceph.quota.max_bytes") == str(256 * MiB).encode()
    assert site.api.patch(site.url("cephfs", name), json={"quota_bytes": 512 * MiB}).status_code == 200
    assert fs.getxattr(path, "ceph.quota.max_bytes") == str(512 * MiB).encode()
    handle = fs.open(f"{path}/data", "w", 0o644)  # a tenant's file: robin's user removes it without its data
    fs.write(handle, b"x" * 4096, 0)
    fs.close(handle)
    assert site.api.post(site.url("cephfs", name) + "/snapshots", json={"name": "v1"}).status_code == 201
    assert cephfs_exists(fs, f"{path}/.snap/v1")
    assert site.api.delete(site.url("cephfs", name) + "/snapshots/v1").status_code == 204
    assert not cephfs_exists(fs, f"{path}/.snap/v1")
    assert site.api.delete(site.url("cephfs", name)).status_code == 204
    assert not cephfs_exists(fs, path)
    assert site.api.post(site.url("cephfs", name) + "/restore").status_code == 200
    assert cephfs_exists(fs, f"{path}/data")
    assert site.api.delete(site.url("cephfs", name)).status_code == 204
    [trashed] = [row for row in _rows(app, CephfsPath, site.project) if row.name == name and row.trash_ref]
    assert trashed.trash_ref.startswith(f"{ROOT}/.trash/") and cephfs_exists(fs, f"{trashed.trash_ref}/data")
    purge_all_due(app)
    assert not cephfs_exists(fs, trashed.trash_ref) and not cephfs_exists(fs, path)
    [purged] = [row for row in _rows(app, CephfsPath, site.project) if row.id == trashed.id]
    assert purged.purged_at is not None and purged.trash_ref is None


def test_robins_user_makes_each_paths_own_user_and_removes_it_with_the_path(site, ceph_conf):
    created = site.create("cephfs", site.robin)
    assert created.status_code == 201, created.json
    url = site.url("cephfs", created.json["name"])
    answer = site.api.post(f"{url}/authorize")
    assert answer.status_code == 200, answer.json
    user = answer.json["user_id"]
    assert caps_of(ceph_conf, user)["mds"] == f"allow rw fsname=cephfs path={created.json['path']}"
    assert site.api.delete(url).status_code == 204
    gone = subprocess.run(["ceph", "--conf", ceph_conf, "auth", "get", f"client.{user}"], capture_output=True,
                          text=True, timeout=60)
    assert gone.returncode != 0 and "ENOENT" in gone.stderr


def test_usage_refresh_and_drift_survey(app, site, rbd_ioctx, fs):
    image = site.create("rbd", site.robin).json
    directory = site.create("cephfs", site.robin).json
    with rbd.Image(rbd_ioctx, image["name"]) as handle:
        handle.write(b"u" * MiB, 0)
    with app.app_context():
        refreshed = usage.refresh(volume_ids=[image["id"], directory["id"]])
    assert refreshed.failed == [] and refreshed.measured == 2
    report = site.api.get("/api/v2/audit/usage", query_string={"volumes": "true"}).json
    [measured] = [row for row in report["volumes"] if row["id"] == image["id"]]
    assert measured["used_bytes"] >= MiB and measured["cluster"] == site.robin
    [capacity] = [row for row in report["clusters"] if row["name"] == site.robin]
    assert capacity["error"] is None and capacity["total_bytes"] > 0  # `ceph df` as client.robin

    # Drift made behind robin's back, as admin; surveyed as client.robin.
    with rbd.Image(rbd_ioctx, image["name"]) as handle:
        handle.resize(96 * MiB)
    fs.setxattr(directory["path"], "ceph.quota.max_bytes", str(32 * MiB).encode(), 0)
    drift = site.api.get("/api/v2/audit/drift", query_string={"older_than": 0, "kind": [
        "size_mismatch", "quota_mismatch"]}).json
    assert [error for error in drift["errors"] if error.get("cluster") == site.robin] == []
    found = {(finding["kind"], finding["evidence"]["name"]) for finding in drift["findings"]
             if finding["evidence"].get("cluster") == site.robin}
    assert found == {("size_mismatch", image["name"]), ("quota_mismatch", directory["name"])}


def test_reconcile_finishes_a_resize_and_undoes_a_create_cut_short(app, site, rbd_ioctx):
    """As after a crash: one row left `resizing`, one `creating` whose image was never made."""
    resized = site.create("rbd", site.robin).json
    with app.app_context():
        with db.unit_of_work() as session:
            session.execute(RbdImage.__table__.update().where(RbdImage.id == resized["id"]).values(
                state=VolumeState.RESIZING, target_size_bytes=96 * MiB))
        spec = {"name": unique("rbd"), "size_bytes": 64 * MiB, "cluster": site.robin}
        never_made = volumes.reserve_new(RBD, site.project, spec, RBD.placement(spec, site.project))
        report = reconcile(older_than=timedelta(0))
    fixed = {(entry["kind"], entry["id"]) for entry in report.fixed}
    assert {("resize_finished", resized["id"]), ("create_undone", never_made.id)} <= fixed
    assert [error for error in report.errors if error.get("id") in (resized["id"], never_made.id)
            or error.get("cluster") == site.robin] == []
    with rbd.Image(rbd_ioctx, resized["name"], read_only=True) as image:
        assert image.size() == 96 * MiB
    assert [row.name for row in _rows(app, RbdImage, site.project) if row.id == never_made.id] == []


UNPRIVILEGED_CREATE = """
import os
from robin.ceph import CephConnection, cephfs_ops
access = {"mon_host": os.environ["MON_HOST"], "cephx_key": os.environ["CEPHX_KEY"], "client_id": "robin"}
conn = CephConnection("lp", access, 10.0)
cephfs_ops.create_dir(conn, "cephfs", os.environ["VOLUME_PATH"], 2**26, owner="lp-unprivileged")
conn.close()
"""
NOBODY = 65534


def test_robin_running_unprivileged_makes_cephfs_paths_in_a_root_owned_by_root(site, ceph_conf, fs):
    """The image runs the API as a user of its own: its caps, not its uid, decide what it may do in CephFS."""
    if os.geteuid() != 0:
        pytest.skip("changing to another uid needs root")
    project_dir = f"{ROOT}/{unique('lp')}"
    path = f"{project_dir}/{unique('fs')}"
    assert fs.stat(ROOT).st_uid == 0 and fs.stat(ROOT).st_mode & 0o777 == 0o755
    try:
        done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                               "-c", UNPRIVILEGED_CREATE], capture_output=True, text=True, timeout=120, cwd="/",
                              env={**os.environ, "MON_HOST": mon_host(ceph_conf), "VOLUME_PATH": path,
                                   "CEPHX_KEY": site.keys["client.robin"]})
        assert done.returncode == 0, done.stderr[-3000:]
        assert fs.getxattr(path, "ceph.quota.max_bytes") == str(2**26).encode()
        assert fs.getxattr(path, "user.robin.volume_id") == b"lp-unprivileged" and fs.stat(path).st_uid == 0
    finally:
        for directory in (path, project_dir):
            if cephfs_exists(fs, directory):
                fs.rmdir(directory)


# --- what a user without the caps gets -----------------------------------------------------------------------------

def test_creating_in_a_pool_without_caps_is_permission_denied_and_leaves_nothing(app, site, rbd_ioctx):
    before = site.usage()
    name = unique("rbd")
    refused = site.api.post(site.url("rbd"), json={"name": name, "size_bytes": 64 * MiB, "cluster": site.limited})
    assert refused.status_code == 502 and refused.json["error"]["code"] == "ceph_permission_denied", refused.json
    assert "EPERM" in refused.json["error"]["message"] or "EACCES" in refused.json["error"]["message"]
    assert [row for row in _rows(app, RbdImage, site.project) if row.name == name] == []
    assert site.usage() == before
    assert name not in rbd.RBD().list(rbd_ioctx) and name not in trash_names(rbd_ioctx)
    with pytest.raises(rbd.ImageNotFound):
        rbd.Image(rbd_ioctx, name, read_only=True)


# Caps that let a user make and remove images but not mark them (robin.rbd_directory): every rbd_ object but rbd_t*
# (librbd's trash, which a remove may go through), so the create is refused after Ceph made the image, and its undo is
# refused too, at the mark it removes last.
HALF_RBD_CAPS = ", ".join(["allow rx pool=rbd"] + [f"allow rwx pool=rbd object_prefix rbd_{letter}"
                                                   for letter in "abcdefghijklmnopqrsuvwxyz"])


@pytest.fixture()
def half_rbd_cluster(app, site, ceph_conf):
    """A cluster entry reaching the dev cluster as a user with HALF_RBD_CAPS; whatever its volumes left (rows,
    images) is removed afterwards, as admin."""
    user, name = f"client.{unique('robin-half')}", unique("lp")
    keyring = ceph(ceph_conf, "auth", "get-or-create", user, "mon", "profile rbd", "osd", HALF_RBD_CAPS)
    key = re.search(r"key = (\S+)", keyring).group(1)
    response = site.api.post("/api/v2/clusters", json={"name": name, "mon_host": mon_host(ceph_conf),
                                                       "client_id": user.removeprefix("client."), "key": key})
    assert response.status_code == 201, response.json
    try:
        yield name
    finally:
        with app.app_context(), db.unit_of_work() as session:
            cluster_id = clusters.resolve(session, name).id
            for row in session.scalars(select(RbdImage).where(RbdImage.cluster_id == cluster_id)):
                with rados.Rados(conffile=ceph_conf) as admin, admin.open_ioctx(row.pool) as ioctx:
                    with contextlib.suppress(rbd.ImageNotFound):
                        rbd.RBD().remove(ioctx, row.name)
                session.delete(row)
        assert site.api.delete(f"/api/v2/clusters/{name}").status_code == 204
        ceph(ceph_conf, "auth", "del", user)


def test_a_create_refused_after_ceph_made_the_image_is_undone_and_leaves_nothing(app, site, half_rbd_cluster,
                                                                                  rbd_ioctx):
    """Refused at the mark, after Ceph made the image; the undo removes the image, then is refused at the mark too
    (undo_create lets the row go on two refusals): no row, no quota, and no image robin forgot."""
    before = site.usage()
    name = unique("rbd")
    refused = site.api.post(site.url("rbd"), json={"name": name, "size_bytes": 64 * MiB,
                                                   "cluster": half_rbd_cluster})
    assert refused.status_code == 502 and refused.json["error"]["code"] == "ceph_permission_denied", refused.json
    assert "robin.rbd_directory" in refused.json["error"]["message"]  # the image was made: the mark was refused
    assert [row for row in _rows(app, RbdImage, site.project) if row.name == name] == []
    assert site.usage() == before
    assert name not in rbd.RBD().list(rbd_ioctx) and name not in trash_names(rbd_ioctx)


def test_setting_a_quota_without_p_is_permission_denied_and_leaves_nothing(app, site, fs):
    before = site.usage()
    name = unique("fs")
    refused = site.api.post(site.url("cephfs"), json={"name": name, "quota_bytes": 64 * MiB,
                                                      "cluster": site.limited})
    assert refused.status_code == 502 and refused.json["error"]["code"] == "ceph_permission_denied", refused.json
    # Mounted, made the directory and marked it; refused at the quota (EACCES), and the directory removed again.
    assert refused.json["error"]["message"].startswith("creating CephFS path") and "EACCES" in refused.json[
        "error"]["message"]
    assert [row for row in _rows(app, CephfsPath, site.project) if row.name == name] == []
    assert site.usage() == before
    assert not cephfs_exists(fs, f"{ROOT}/{site.project}/{name}")


def test_a_wrong_key_is_permission_denied_not_an_outage(site, ceph_conf):
    key = site.keys["client.robin"]
    wrong = key[:20] + ("A" if key[20] != "A" else "B") + key[21:]  # well-formed, not the user's
    name = unique("lp")
    registered = site.api.post("/api/v2/clusters", json={"name": name, "mon_host": mon_host(ceph_conf),
                                                         "client_id": "robin", "key": wrong})
    assert registered.status_code == 201, registered.json
    try:
        before = site.usage()
        for attempt in ("connecting", "refused again without connecting"):
            refused = site.create("rbd", name)
            assert refused.status_code == 502, (attempt, refused.json)
            assert refused.json["error"]["code"] == "ceph_permission_denied", (attempt, refused.json)
        assert site.usage() == before
        detail = site.api.get(f"/api/v2/clusters/{name}").json
        assert detail["reachable"] is False and "EACCES" in detail["error"]
    finally:
        # Refused while any row, even a deleted one, names the cluster: none was left.
        assert site.api.delete(f"/api/v2/clusters/{name}").status_code == 204


def test_an_mds_scrub_without_allow_star_is_permission_denied(app, site):
    path = site.create("cephfs", site.robin).json["path"]
    with app.app_context():
        with db.reading() as session:
            conn = clusters.connection(clusters.resolve(session, site.robin))
        with pytest.raises(CephError) as raised:
            cephfs_ops.scrub(conn, "cephfs", path, timeout=30)
    assert isinstance(raised.value, CephPermissionDenied) and raised.value.errno == errno.EACCES
    answer = api_error(raised.value)
    assert (answer.status, answer.code) == (502, "ceph_permission_denied")


# --- a CSI node as client.robin-node --------------------------------------------------------------------------------

@pytest.fixture
def node(site):
    """A node-only CSI plugin and what a test staged and published on it, undone at the end."""
    if os.geteuid() != 0:
        pytest.skip("the CSI node service mounts file systems: run as root")
    root = tempfile.mkdtemp(prefix="lpnode", dir="/tmp")
    shim = ShimProcess(None, None, mode="node", node_id="lp-node", directory=tempfile.mkdtemp(prefix="s", dir=root))
    done: list[tuple] = []  # (undo call, request), in the order they must run
    yield shim, root, done
    for call, request in reversed(done):
        try:
            call(request)
        except grpc.RpcError as exc:
            print(f"undoing {type(request).__name__}: {exc.code()} {exc.details()}")
    shim.stop()
    left = leftovers(root)
    if left:
        force_clean(root)
    assert not left, f"left behind: {left}"
    if not leftovers(root):
        shutil.rmtree(root)


def _stage_and_publish(site, node, kind: str, fs_type: str, user: str = "robin-node", key: str = "",
                       suffix: str = "") -> tuple[str, dict]:
    """Stage and publish a new volume as `user` (with `key`; client.robin-node's by default)."""
    shim, root, done = node
    volume = site.create(kind, site.robin, size=256 * MiB).json
    cluster = site.api.get(f"/api/v2/clusters/{site.robin}").json
    ref = VolumeRef(kind, site.project, volume["name"])
    context = volume_context(ref, volume, cluster, cluster["monitors"])
    staging, target = os.path.join(root, f"staging-{kind}{suffix}"), os.path.join(root, f"target-{kind}{suffix}")
    os.makedirs(staging)
    secrets = {"userID": user, "userKey": key or site.keys[f"client.{user}"]}
    capability = mount_capability(fs_type)
    shim.node.NodeStageVolume(pb.NodeStageVolumeRequest(
        volume_id=ref.handle, staging_target_path=staging, volume_capability=capability, secrets=secrets,
        volume_context=context))
    done.append((shim.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id=ref.handle,
                                                                          staging_target_path=staging)))
    shim.node.NodePublishVolume(pb.NodePublishVolumeRequest(
        volume_id=ref.handle, staging_target_path=staging, target_path=target, volume_capability=capability,
        volume_context=context))
    done.append((shim.node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(volume_id=ref.handle,
                                                                              target_path=target)))
    assert mounted(target) is not None
    return target, volume


def test_node_stages_and_publishes_an_rbd_image(site, node, rbd_ioctx):
    target, volume = _stage_and_publish(site, node, "rbd", "ext4")
    write(os.path.join(target, "hello"), "from a pod")
    assert read(os.path.join(target, "hello")) == "from a pod"
    with rbd.Image(rbd_ioctx, volume["name"], read_only=True) as image:  # mkfs wrote through client.robin-node
        assert image.read(EXT4_MAGIC_AT, 2) == EXT4_MAGIC


def test_node_stages_and_publishes_a_cephfs_path_and_cannot_change_its_quota(site, node, fs):
    target, volume = _stage_and_publish(site, node, "cephfs", "")
    write(os.path.join(target, "hello"), "from a pod")
    handle = fs.open(f"{volume['path']}/hello", "r", 0)
    try:
        assert fs.read(handle, 0, 64) == b"from a pod"
    finally:
        fs.close(handle)
    with pytest.raises(OSError) as raised:
        os.setxattr(target, "ceph.quota.max_bytes", str(GiB).encode())
    assert raised.value.errno in (errno.EPERM, errno.EACCES)
    assert fs.getxattr(volume["path"], "ceph.quota.max_bytes") == str(256 * MiB).encode()


def test_the_node_user_cannot_reach_a_pool_it_has_no_caps_on(ceph_conf, site):
    # The node's key opens robin's pool and no other: the CephFS metadata pool is refused.
    cluster = rados.Rados(conffile=ceph_conf, rados_id="robin-node", conf={"key": site.keys["client.robin-node"]})
    cluster.connect(timeout=10)
    try:
        with cluster.open_ioctx("cephfs_metadata") as ioctx, pytest.raises(rados.PermissionError):
            ioctx.write_full(unique("probe"), b"x")
    finally:
        cluster.shutdown()


# --- the data gateway -----------------------------------------------------------------------------------------------

def caps_of(ceph_conf: str, user: str) -> dict[str, str]:
    [entry] = json.loads(ceph(ceph_conf, "auth", "get", f"client.{user}", "--format", "json"))
    return entry["caps"]


def test_the_gateway_mounts_a_path_with_its_own_user_so_robins_user_needs_no_data_pool_cap(app, site, ceph_conf):
    """The gateway mounts (robin.gateway.mounting, as its agent does) a CephFS path of the cluster reached as
    client.robin, whose caps (the page's) name no data pool: the path's own user, made by client.robin, writes the
    files."""
    if os.geteuid() != 0:
        pytest.skip("the gateway mounts file systems: run as root")
    assert "cephfs" not in caps_of(ceph_conf, "robin")["osd"]
    created = site.create("cephfs", site.robin)
    assert created.status_code == 201, created.json
    place = mounting.Place(tempfile.mkdtemp(prefix="lpgw", dir="/tmp"), "rbd-fuse")
    with app.app_context():
        with db.reading() as session:
            volume = volumes.find(session, CEPHFS, site.project, created.json["name"])
        path = mounting.mount(place, volume)
        try:
            write(os.path.join(path, "upload"), "a file")
            assert read(os.path.join(path, "upload")) == "a file"
            [state] = os.listdir(os.path.join(place.gateway_dir, "state"))
            with open(os.path.join(place.gateway_dir, "state", state, "keyring")) as keyring:
                assert keyring.readline().strip() == f"[client.robin-vol-{volume.id}]"
        finally:
            mounting.unmount(place, mounting.volume_id(volume), volume.name)
    assert not mounts.mounts_under(place.gateway_dir)
    shutil.rmtree(place.gateway_dir)
