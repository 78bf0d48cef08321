"""A node plugin with --cephfs-users (ROBIN_CSI_CEPHFS_USERS): it stages robin's CephFS paths with each path's own
cephx user, fetched from robin's API with a node token, at the path robin records, whatever the node-stage secret
and the volume context say; RBD images keep the secret's user. A stage whose ceph-fuse died is mounted again with
the user fetched again."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

import pytest

from robin.client import VolumeRef, volume_context
from tests.conftest import make_token, unique
from tests.csi.test_node import (  # noqa: F401 (fixtures)
    RECOVERY_TIMEOUT_S,
    MiB,
    NodeClient,
    Vol,
    cluster_identity,
    kill_daemons,
    project,
    robin,
    volumes,
    workdir,
)
from tests.support.csi import ShimProcess
from tests.support.mounts import read, write
from tests.support.net import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_user_node(app, robin_url, volumes, node_secrets, workdir):  # noqa: F811 (fixtures)
    """A node-only plugin that mounts CephFS paths with their own users, holding a node token (not an admin's)."""
    if os.geteuid() != 0:
        pytest.skip("the CSI node service mounts file systems: run as root")
    shim = ShimProcess(robin_url, make_token(app, "node"), mode="node", node_id="node-users",
                       directory=tempfile.mkdtemp(prefix="s", dir=workdir),
                       extra_env={"ROBIN_CSI_CEPHFS_USERS": "true"})
    # The secret names a user that cannot mount anything: only the path's own user can have mounted it.
    client = NodeClient(shim, {"userID": "nobody", "userKey": node_secrets["userKey"][:-4] + "AAA="},
                        tempfile.mkdtemp(prefix="t", dir=workdir))
    try:
        yield client
        errors = client.cleanup()
        assert not errors, errors
    finally:
        shim.stop()
        print(f"--- csi_shim log ({shim.directory}) ---\n{shim.log()[-4000:]}")


def auth_entry(ceph_conf: str, entity: str) -> dict | None:
    done = subprocess.run(["ceph", "--conf", ceph_conf, "auth", "get", entity, "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def test_a_path_is_staged_with_its_own_user_where_robin_records_it(own_user_node, volumes, robin, project,  # noqa: F811
                                                                    fs, ceph_conf):
    neighbour = volumes("cephfs")
    # Made here, not by `volumes`: this test deletes it.
    made = robin.call("POST", f"/api/v2/projects/{project}/cephfs-paths", json={"name": unique("own"),
                                                                                "quota_bytes": 256 * MiB})
    cluster = robin.call("GET", f"/api/v2/clusters/{made['cluster']}")
    ref = VolumeRef("cephfs", project, made["name"])
    vol = Vol("cephfs", made["name"], 256 * MiB, volume_context(ref, made, cluster, cluster["monitors"]), made)
    # A volume context naming the neighbour's path: robin's record of the volume wins.
    vol.context = {**vol.context, "path": neighbour.volume["path"]}
    staging = own_user_node.stage(vol)
    target = own_user_node.publish(vol, staging)
    write(os.path.join(target, "hello"), "own user")
    assert read(os.path.join(target, "hello")) == "own user"
    handle = fs.open(f"{vol.volume['path']}/hello", "r", 0)
    try:
        assert fs.read(handle, 0, 64) == b"own user"
    finally:
        fs.close(handle)
    assert os.listdir(os.path.join(target)) == ["hello"]
    user = f"client.robin-vol-{vol.volume['id']}"
    assert auth_entry(ceph_conf, user)["caps"]["mds"] == f"allow rw fsname=cephfs path={vol.volume['path']}"
    [keyring] = [os.path.join(d.path, "keyring") for d in os.scandir(own_user_node.shim.state_dir)]
    with open(keyring) as handle:
        assert handle.readline().strip() == f"[{user}]"
    assert oct(os.stat(keyring).st_mode & 0o777) == "0o600"

    own_user_node.unpublish(vol, target)
    own_user_node.unstage(vol, staging)
    robin.call("DELETE", f"/api/v2/projects/{project}/cephfs-paths/{vol.name}", params={"purge": "true"})
    assert auth_entry(ceph_conf, user) is None


def test_a_dead_stage_is_mounted_again_with_the_paths_user_fetched_again(own_user_node, volumes, ceph_conf):  # noqa: F811
    node = own_user_node
    vol = volumes("cephfs")
    staging = node.stage(vol)
    target = node.publish(vol, staging)
    write(os.path.join(target, "hello"), "own user")
    [keyring] = [os.path.join(d.path, "keyring") for d in os.scandir(node.shim.state_dir)]
    with open(keyring) as handle:
        recorded = handle.read()
    user, key = recorded.split("]", 1)[0] + "]", recorded.split("key = ", 1)[1].strip()
    with open(keyring, "w") as handle:  # a key that no longer works: only robin's answer can mount it again
        handle.write(f"{user}\n\tkey = {key[:-8]}AAAAAAA=\n")

    kill_daemons(node, ceph_conf)
    node.shim.restart()
    wait_until(lambda: f"recovered {vol.id}" in node.shim.log(), RECOVERY_TIMEOUT_S, "the recovery")
    assert read(os.path.join(target, "hello")) == "own user"
    with open(keyring) as handle:
        assert handle.read() == recorded
