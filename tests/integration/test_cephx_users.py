"""A cephx user per CephFS path (robin.ceph.cephx_users, robin.volumes.authorization): made on first need through
`POST .../cephfs-paths/<name>/authorize`, reaching that path only, removed with the path; checked in Ceph itself and
through real ceph-fuse mounts made by robin.mounts, as the CSI node and the gateway make them."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta

import pytest
import rados
from sqlalchemy import select, update

from robin import mounts
from robin.ceph import cephx_users
from robin.clusters.models import CephCluster
from robin.db import db
from robin.errors import Conflict
from robin.mounts import Access, Host, MountError
from robin.projects import service as projects
from robin.reconcile.service import reconcile
from robin.volumes import authorization
from robin.volumes import service as volumes
from robin.volumes.kinds import CEPHFS
from robin.volumes.models import CephfsPath, VolumeState
from tests.conftest import unique
from tests.integration.test_ceph_unavailable import dead_cluster  # noqa: F401 (a fixture)
from tests.integration.test_cephfs_subvolumes import use_subvolumes
from tests.support.mounts import read, write

pytestmark = pytest.mark.integration
MiB = 2**20


def auth_get(rados_cluster, entity: str) -> dict | None:
    """The user's entry in the monitors' auth database (as admin), None when there is none."""
    ret, out, _ = rados_cluster.mon_command(json.dumps({"prefix": "auth get", "entity": entity, "format": "json"}),
                                            b"", timeout=30)
    return json.loads(out)[0] if ret == 0 else None


def new_path(admin, project: str) -> dict:
    created = admin.post(f"/api/v2/projects/{project}/cephfs-paths", json={"name": unique("fs"),
                                                                          "quota_bytes": 64 * MiB})
    assert created.status_code == 201, created.json
    return created.json


def authorize_url(project: str, name: str) -> str:
    return f"/api/v2/projects/{project}/cephfs-paths/{name}/authorize"


@pytest.fixture()
def node_api(as_role):
    return as_role("node")


def test_the_user_is_made_once_with_caps_on_the_path_only(admin, node_api, new_project, rados_cluster):
    project = new_project()
    path = new_path(admin, project)
    first = node_api.post(authorize_url(project, path["name"]))
    assert first.status_code == 200, first.json
    assert first.json["user_id"] == f"robin-vol-{path['id']}"
    assert (first.json["fs"], first.json["path"], first.json["cluster"]) == ("cephfs", path["path"], "default")
    again = admin.post(authorize_url(project, path["name"]))  # a rerun, another host: the same user and key
    assert again.json == first.json
    entry = auth_get(rados_cluster, f"client.robin-vol-{path['id']}")
    assert entry["key"] == first.json["key"]
    assert entry["caps"] == {"mds": f"allow rw fsname=cephfs path={path['path']}", "mon": "allow r fsname=cephfs",
                             "osd": "allow rw tag cephfs data=cephfs"}


def test_a_node_token_does_nothing_else(admin, node_api, new_project):
    project = new_project()
    path = new_path(admin, project)
    volume_url = f"/api/v2/projects/{project}/cephfs-paths/{path['name']}"
    assert node_api.get("/api/v2/projects").json["items"] == []  # it sees no project
    new_project_body = {"name": unique("p"), "quota": {"max_bytes": MiB, "max_volumes": 1, "max_snapshots": 1}}
    for method, url, body in (("get", "/api/v2/volumes", None), ("get", volume_url, None),
                              ("patch", volume_url, {"quota_bytes": 128 * MiB}), ("delete", volume_url, None),
                              ("post", "/api/v2/projects", new_project_body)):
        answer = getattr(node_api, method)(url, json=body)
        assert answer.status_code == 403, (method, url, answer.json)
    assert admin.get(volume_url).json["quota_bytes"] == 64 * MiB


@pytest.mark.parametrize("role", ["member", "auditor", "metrics", "other-member"])
def test_tokens_of_tenants_auditors_and_scrapers_get_no_key_and_no_user_is_made(
        role, admin, as_role, new_project, rados_cluster):
    project = new_project()
    path = new_path(admin, project)
    token_project = new_project() if role == "other-member" else project
    api = as_role("member", token_project) if role.endswith("member") else as_role(role)
    refused = api.post(authorize_url(project, path["name"]))
    assert refused.status_code == 403, refused.json
    assert refused.json["error"]["code"] == "forbidden"
    assert "key" not in json.dumps(refused.json["error"]["details"])
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


def test_unknown_paths_and_projects_are_404_and_make_nothing(admin, node_api, new_project):
    project = new_project()
    missing = node_api.post(authorize_url(project, "no-such-path"))
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "volume_not_found")
    no_project = node_api.post(authorize_url(unique("p"), "x"))
    assert (no_project.status_code, no_project.json["error"]["code"]) == (404, "project_not_found")


def test_a_path_being_deleted_gets_no_user(app, admin, node_api, new_project, rados_cluster):
    project = new_project()
    path = new_path(admin, project)
    with app.app_context(), db.writing() as connection:
        connection.execute(update(CephfsPath.__table__).where(CephfsPath.id == path["id"])
                           .values(state=VolumeState.DELETING))
    try:
        refused = node_api.post(authorize_url(project, path["name"]))
        assert (refused.status_code, refused.json["error"]["code"]) == (409, "volume_busy")
        assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None
    finally:
        with app.app_context(), db.writing() as connection:
            connection.execute(update(CephfsPath.__table__).where(CephfsPath.id == path["id"])
                               .values(state=VolumeState.AVAILABLE))


def test_a_user_made_while_a_delete_ran_is_removed_by_the_request(app, admin, new_project, rados_cluster):
    """The request read the path available, the delete then ran to its end, and only then the user was made: the
    request sees the row deleted afterwards and removes the user it made."""
    project = new_project()
    path = new_path(admin, project)
    with app.app_context():
        with db.reading() as session:
            stale = volumes.find(session, CEPHFS, project, path["name"])
        assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}").status_code == 204
        with pytest.raises(Conflict) as raised:
            authorization.volume_user(stale)
    assert raised.value.code == "volume_busy"
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


def test_delete_and_purge_remove_the_user(admin, node_api, new_project, rados_cluster):
    project = new_project()
    trashed, purged = new_path(admin, project), new_path(admin, project)
    for path, query in ((trashed, {}), (purged, {"purge": "true"})):
        assert node_api.post(authorize_url(project, path["name"])).status_code == 200
        assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is not None
        deleted = admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}", query_string=query)
        assert deleted.status_code == 204, deleted.json
        assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None
    # Restored from the trash, the path gets a new user (and key) on its next mount.
    restored = admin.post(f"/api/v2/projects/{project}/cephfs-paths/{trashed['name']}/restore")
    assert restored.status_code == 200, restored.json
    assert auth_get(rados_cluster, f"client.robin-vol-{trashed['id']}") is None
    assert node_api.post(authorize_url(project, trashed["name"])).status_code == 200


def test_the_reconciler_removes_a_user_a_crash_left_for_a_deleted_path(app, admin, new_project, rados_cluster):
    project = new_project()
    path = new_path(admin, project)
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}",
                        query_string={"purge": "true"}).status_code == 204
    with app.app_context():
        with db.reading() as session:
            row = session.get(CephfsPath, path["id"])
        # What a request for credentials that died between making the user and seeing the delete leaves.
        cephx_users.authorize(volumes.ceph_connection(row), row.fs_name, row.path, row.id)
        assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is not None
        report = reconcile(older_than=timedelta(0), survey_drift=False)
    assert not [error for error in report.errors if error["id"] == path["id"]]
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


# --- a project's delete: the users of its deleted paths go before their rows ---------------------------------------

def leave_user(app, rados_cluster, volume_id: str, caps: list[str] | None = None) -> None:
    """What robin dying between making a deleted path's user and removing it leaves, once the reconciler's window
    passed: the user, known to no removal but the path's row. `caps` (mds, mon, osd) as the manager gives a
    subvolume's user; by default a directory's, as `fs authorize` gives them."""
    if caps is None:
        with app.app_context():
            with db.reading() as session:
                row = session.get(CephfsPath, volume_id)
            cephx_users.authorize(volumes.ceph_connection(row), row.fs_name, row.path, row.id)
    else:
        ret, _, status = rados_cluster.mon_command(json.dumps({
            "prefix": "auth get-or-create", "entity": f"client.robin-vol-{volume_id}", "caps": caps}), b"",
            timeout=30)
        assert ret == 0, status
    assert auth_get(rados_cluster, f"client.robin-vol-{volume_id}") is not None


def purged_path(admin, node_api, project: str) -> dict:
    path = new_path(admin, project)
    assert node_api.post(authorize_url(project, path["name"])).status_code == 200
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}",
                        query_string={"purge": "true"}).status_code == 204
    return path


def test_deleting_a_project_removes_the_user_a_deleted_path_left(app, admin, node_api, new_project, rados_cluster,
                                                                 db_rows):
    """Its rows go with the project: the user would be known to nothing, and its caps name the path a project made
    again under this name would give a volume of the same name."""
    project = new_project()
    path = purged_path(admin, node_api, project)
    leave_user(app, rados_cluster, path["id"])
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None
    assert db_rows(select(CephfsPath).where(CephfsPath.id == path["id"])) == []


def test_deleting_a_project_removes_the_user_a_deleted_subvolume_left(app, admin, node_api, subvolume_project,
                                                                      rados_cluster):
    """A subvolume's user reaches its RADOS namespace, named after the subvolume: a subvolume of the same name
    would have it again."""
    project = subvolume_project
    path = purged_path(admin, node_api, project)
    assert path["layout"] == "subvolume"
    leave_user(app, rados_cluster, path["id"], caps=[
        "mds", f"allow rw path={path['path']}", "mon", "allow r",
        "osd", f"allow rw pool=cephfs_data namespace=fsvolumens_{path['name']}"])
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


def test_a_path_deleted_while_the_users_are_removed_loses_its_user_too(app, admin, node_api, new_project,
                                                                        rados_cluster, monkeypatch):
    """A member deletes a path between the removal of the users and the transaction that drops the rows: that
    transaction finds a row whose user was not removed, drops nothing, and the delete removes that user first."""
    project = new_project()
    first = purged_path(admin, node_api, project)
    late: list[dict] = []
    remove_path_users = projects._remove_path_users

    def then_delete_another(name: str, removed: set[str]) -> set[str]:
        gone = remove_path_users(name, removed)
        if not late:
            late.append(purged_path(admin, node_api, project))
            leave_user(app, rados_cluster, late[0]["id"])
        return gone

    monkeypatch.setattr(projects, "_remove_path_users", then_delete_another)
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204
    for path in (first, *late):
        assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


def test_a_project_whose_users_ceph_cannot_remove_is_kept(app, admin, node_api, new_project, rados_cluster, db_rows,
                                                          request):
    """Ceph unreachable for one of its paths: the delete is refused and nothing is dropped, for the admin to retry."""
    dead = request.getfixturevalue("dead_cluster")
    project = new_project()
    path = purged_path(admin, node_api, project)
    leave_user(app, rados_cluster, path["id"])
    with app.app_context():
        with db.reading() as session:
            default_id = session.get(CephfsPath, path["id"]).cluster_id
            dead_id = session.scalar(select(CephCluster.id).where(CephCluster.name == dead))
    move_to = update(CephfsPath.__table__).where(CephfsPath.id == path["id"])
    try:
        with app.app_context(), db.writing() as connection:  # its user's removal now asks the dead cluster
            connection.execute(move_to.values(cluster_id=dead_id))
        refused = admin.delete(f"/api/v2/projects/{project}")
        assert refused.status_code == 503
        assert refused.json["error"]["code"] == "ceph_unavailable"
        assert admin.get(f"/api/v2/projects/{project}").status_code == 200
        assert db_rows(select(CephfsPath.id).where(CephfsPath.id == path["id"])) == [path["id"]]
    finally:
        with app.app_context(), db.writing() as connection:
            connection.execute(move_to.values(cluster_id=default_id))
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204  # the retry
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


# --- through real mounts ------------------------------------------------------------------------------------------

@pytest.fixture()
def host():
    """robin.mounts' staging on this host, as the gateway and the CSI node use it; whatever a test staged is
    unstaged after."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    root = tempfile.mkdtemp(prefix="cx", dir="/tmp")
    stager = Host(os.path.join(root, "state"), "rbd-fuse")
    staged: list[tuple[str, str]] = []

    def stage(volume_id: str, fs_name: str, path: str, credentials: dict, cluster: dict) -> str:
        mountpoint = os.path.join(root, unique("m"))
        staged.append((volume_id, mountpoint))
        access = Access(cluster["monitors"], cluster["fsid"], credentials["user_id"], credentials["key"])
        stager.stage(volume_id, mountpoint, {"type": "cephfs", "fsName": fs_name, "path": path}, access)
        return mountpoint

    yield stage
    for volume_id, mountpoint in reversed(staged):
        stager.unstage(volume_id, mountpoint)
        if os.path.isdir(mountpoint):
            os.rmdir(mountpoint)


def test_a_paths_user_reads_and_writes_it_and_cannot_reach_its_neighbour(admin, node_api, new_project, host, fs,
                                                                           ceph_conf):
    project = new_project()
    mine, neighbour = new_path(admin, project), new_path(admin, new_project())
    fs.mkdir(f"{neighbour['path']}/inside", 0o755)
    cluster = admin.get("/api/v2/clusters/default").json
    credentials = node_api.post(authorize_url(project, mine["name"])).json

    mounted = host(f"cephfs:{project}:{mine['name']}", "cephfs", mine["path"], credentials, cluster)
    write(os.path.join(mounted, "hello"), "from a pod")
    assert read(os.path.join(mounted, "hello")) == "from a pod"
    handle = fs.open(f"{mine['path']}/hello", "r", 0)  # the file is in the path, as the MDS sees it
    try:
        assert fs.read(handle, 0, 64) == b"from a pod"
    finally:
        fs.close(handle)

    # The neighbour's path (another project's) with this path's user: the MDS refuses the mount, nothing is left.
    with pytest.raises(MountError) as raised:
        host(f"cephfs:{project}:neighbour", "cephfs", neighbour["path"], credentials, cluster)
    assert "non-allowable root" in raised.value.message and "Operation not permitted" in raised.value.message
    assert [m.mountpoint for m in mounts.mounts_under(os.path.dirname(mounted))] == [mounted]


def test_a_paths_user_cannot_touch_the_metadata_pool(admin, node_api, new_project, ceph_conf):
    project = new_project()
    path = new_path(admin, project)
    credentials = node_api.post(authorize_url(project, path["name"])).json
    cluster = rados.Rados(conffile=ceph_conf, rados_id=credentials["user_id"], conf={"key": credentials["key"]})
    cluster.connect(timeout=10)
    try:
        with cluster.open_ioctx("cephfs_metadata") as ioctx, pytest.raises(rados.PermissionError):
            ioctx.write_full(unique("probe"), b"x")
    finally:
        cluster.shutdown()


# --- lifecycle: the order of a delete, and a path used again ---------------------------------------------------

def test_a_failed_move_to_the_trash_keeps_the_user_and_its_key(admin, node_api, new_project, fs, rados_cluster):
    project = new_project()
    path = new_path(admin, project)
    first = node_api.post(authorize_url(project, path["name"])).json
    # A non-empty directory where the trash move renames the path to: the rename fails.
    blocker = f"/robin/.trash/{path['id']}"
    fs.mkdirs(f"{blocker}/in-the-way", 0o755)
    try:
        refused = admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}")
        assert refused.status_code >= 400, refused.json
        assert admin.get(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}").json["state"] == "available"
        assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}")["key"] == first["key"]
        assert node_api.post(authorize_url(project, path["name"])).json == first
    finally:
        fs.rmdir(f"{blocker}/in-the-way")
        fs.rmdir(blocker)
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}").status_code == 204
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


def test_a_new_path_of_the_same_name_removes_a_stale_user_of_the_old_one(app, admin, node_api, new_project, host,
                                                                           rados_cluster):
    """What a purge racing a request for credentials leaves when the reconciler did not run in time: the old
    volume's user, whose caps name the path, not the volume. The new volume at that path removes it before it
    holds data, and the old key cannot mount it."""
    project = new_project()
    old = new_path(admin, project)
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{old['name']}",
                        query_string={"purge": "true"}).status_code == 204
    with app.app_context():
        with db.reading() as session:
            row = session.get(CephfsPath, old["id"])
        stale = cephx_users.authorize(volumes.ceph_connection(row), row.fs_name, row.path, row.id)
    created = admin.post(f"/api/v2/projects/{project}/cephfs-paths", json={"name": old["name"],
                                                                          "quota_bytes": 64 * MiB})
    assert created.status_code == 201, created.json
    new = created.json
    assert new["path"] == old["path"] and new["id"] != old["id"]
    assert auth_get(rados_cluster, f"client.robin-vol-{old['id']}") is None
    cluster = admin.get("/api/v2/clusters/default").json
    with pytest.raises(MountError):
        host(f"cephfs:{project}:stale", "cephfs", new["path"], {"user_id": stale.user_id, "key": stale.key},
             cluster)
    assert node_api.post(authorize_url(project, new["name"])).status_code == 200


# --- the subvolume layout: the manager's `fs subvolume authorize` --------------------------------------------------

@pytest.fixture()
def subvolume_project(app, monkeypatch, new_project):
    use_subvolumes(app, monkeypatch)
    return new_project()


def mgr(rados_cluster, prefix: str, **args):
    ret, out, status = rados_cluster.mgr_command(
        json.dumps({"prefix": prefix, "vol_name": "cephfs", "format": "json", **args}), b"", timeout=120)
    assert ret == 0, (prefix, args, status)
    return json.loads(out) if out.strip() else None


def test_a_subvolumes_user_is_the_managers_confined_to_its_namespace(admin, node_api, subvolume_project,
                                                                      rados_cluster):
    project = subvolume_project
    path = new_path(admin, project)
    assert path["layout"] == "subvolume"
    first = node_api.post(authorize_url(project, path["name"]))
    assert first.status_code == 200, first.json
    assert first.json["user_id"] == f"robin-vol-{path['id']}" and first.json["path"] == path["path"]
    assert admin.post(authorize_url(project, path["name"])).json == first.json
    user = f"client.robin-vol-{path['id']}"
    entry = auth_get(rados_cluster, user)
    assert entry["key"] == first.json["key"]
    namespace = f"fsvolumens_{path['name']}"
    assert entry["caps"] == {"mds": f"allow rw path={path['path']}", "mon": "allow r",
                             "osd": f"allow rw pool=cephfs_data namespace={namespace}"}
    info = mgr(rados_cluster, "fs subvolume info", sub_name=path["name"], group_name=project)
    assert info["pool_namespace"] == namespace
    listed = mgr(rados_cluster, "fs subvolume authorized_list", sub_name=path["name"], group_name=project)
    assert listed == [{f"robin-vol-{path['id']}": "rw"}]

    # The trash keeps the subvolume where it is, without its user; a purge finds nothing left to remove.
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}").status_code == 204
    assert auth_get(rados_cluster, user) is None
    assert mgr(rados_cluster, "fs subvolume authorized_list", sub_name=path["name"], group_name=project) == []


def test_purging_a_subvolume_removes_its_user(admin, node_api, subvolume_project, rados_cluster):
    project = subvolume_project
    path = new_path(admin, project)
    assert node_api.post(authorize_url(project, path["name"])).status_code == 200
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}",
                        query_string={"purge": "true"}).status_code == 204
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


def test_a_subvolume_user_an_older_robin_made_is_kept(app, admin, node_api, subvolume_project, rados_cluster):
    """An older robin made subvolumes' users with `fs authorize` on their path: the manager refuses to take them
    over, and robin keeps answering that user and key until the volume is deleted."""
    project = subvolume_project
    path = new_path(admin, project)
    with app.app_context():
        with db.reading() as session:
            row = session.get(CephfsPath, path["id"])
        older = cephx_users.authorize(volumes.ceph_connection(row), row.fs_name, row.path, row.id)
    answer = node_api.post(authorize_url(project, path["name"]))
    assert answer.status_code == 200, answer.json
    assert answer.json["key"] == older.key
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}")["caps"]["mds"] == \
        f"allow rw fsname=cephfs path={path['path']}"
    assert admin.delete(f"/api/v2/projects/{project}/cephfs-paths/{path['name']}").status_code == 204
    assert auth_get(rados_cluster, f"client.robin-vol-{path['id']}") is None


def first_object(fs, file_path: str) -> str:
    """The RADOS object holding a file's first bytes: <inode in hex>.<block number>."""
    return f"{fs.stat(file_path).st_ino:x}.00000000"


def test_a_subvolumes_user_reads_and_writes_it_and_reaches_no_neighbour(admin, node_api, subvolume_project,
                                                                        new_project, host, fs, ceph_conf):
    project = subvolume_project
    mine, neighbour = new_path(admin, project), new_path(admin, new_project())
    for path in (mine, neighbour):
        write_file(fs, f"{path['path']}/data", b"secret of " + path["name"].encode())
    cluster = admin.get("/api/v2/clusters/default").json
    credentials = node_api.post(authorize_url(project, mine["name"])).json

    mounted = host(f"cephfs:{project}:{mine['name']}", "cephfs", mine["path"], credentials, cluster)
    assert read(os.path.join(mounted, "data")) == f"secret of {mine['name']}"
    write(os.path.join(mounted, "hello"), "from a pod")
    assert read(os.path.join(mounted, "hello")) == "from a pod"
    with pytest.raises(MountError) as raised:
        host(f"cephfs:{project}:neighbour", "cephfs", neighbour["path"], credentials, cluster)
    assert "Operation not permitted" in raised.value.message

    # Knowing the object names of the neighbour's files is no use: the user's OSD cap names its own namespace.
    cluster_handle = rados.Rados(conffile=ceph_conf, rados_id=credentials["user_id"],
                                 conf={"key": credentials["key"]})
    cluster_handle.connect(timeout=10)
    try:
        with cluster_handle.open_ioctx("cephfs_data") as ioctx:
            ioctx.set_namespace(f"fsvolumens_{mine['name']}")
            assert ioctx.read(first_object(fs, f"{mine['path']}/data")) == b"secret of " + mine["name"].encode()
            ioctx.set_namespace(f"fsvolumens_{neighbour['name']}")
            with pytest.raises(rados.PermissionError):
                ioctx.read(first_object(fs, f"{neighbour['path']}/data"))
            ioctx.set_namespace("")
            with pytest.raises(rados.PermissionError):
                ioctx.read(first_object(fs, f"{neighbour['path']}/data"))
    finally:
        cluster_handle.shutdown()


def write_file(fs, path: str, data: bytes) -> None:
    handle = fs.open(path, "w", 0o644)
    try:
        fs.write(handle, data, 0)
        fs.fsync(handle, 0)
    finally:
        fs.close(handle)
