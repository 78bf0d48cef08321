"""The Node service on real mounts: csi-sanity's Node cases, and what sanity cannot check (data across unstage and
stage, a CephFS volume shared by two targets, a plugin restart between stage and publish, read-only publishes,
block volumes, mkfs only on blank images, sizes).

Volumes come straight from robin's REST API (no controller involved); a node-only plugin stages them with
rbd-fuse + loop devices (RBD) and ceph-fuse (CephFS). Every path is under one directory of this module in /tmp;
each test undoes its stages and publishes through the plugin, even when it fails, and at the end of the module
nothing of ours may be mounted, attached to a loop device, or running.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import grpc
import pytest
import requests

from csi_shim.stubs import pb
from robin.client import VolumeRef
from tests.conftest import unique
from tests.support.csi import ShimProcess, block_capability, mount_capability
from tests.support.mounts import read, write
from tests.support.net import wait_until

pytestmark = pytest.mark.integration

MiB, GiB = 2**20, 2**30
Code = grpc.StatusCode
RPC = pb.NodeServiceCapability.RPC
EXIT_TIMEOUT_S = 40


# --- what is mounted, attached and running under a directory (read here, independently of the plugin) ------------


def mount_entries() -> list[dict]:
    entries = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            rest = fields[fields.index("-", 6) + 1:]
            entries.append({"device": fields[2], "mountpoint": fields[4], "options": fields[5].split(","),
                            "fstype": rest[0], "source": rest[1]})
    return entries


def mounted(path: str) -> dict | None:
    found = [e for e in mount_entries() if e["mountpoint"] == os.path.realpath(path)]
    return found[-1] if found else None


def loops_under(root: str) -> dict[str, str]:
    attached = {}
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as backing:
                path = backing.read().strip()
        except OSError:
            continue
        if path.startswith(root + "/"):
            attached[f"/dev/{name}"] = path
    return attached


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphaned daemon's zombie waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_under(root: str, exclude: tuple[int, ...] = ()) -> dict[int, str]:
    """Running processes with an argument under `root` (our FUSE daemons, by their mountpoint or ceph.conf)."""
    found = {}
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if pid not in exclude and any(a.startswith(root + "/") for a in argv[1:]) and running(pid):
            found[pid] = " ".join(argv)
    return found


def leftovers(root: str, exclude: tuple[int, ...] = ()) -> list[str]:
    return ([f"mounted: {e['mountpoint']}" for e in mount_entries() if e["mountpoint"].startswith(root + "/")]
            + [f"loop: {device} -> {path}" for device, path in loops_under(root).items()]
            + [f"process {pid}: {argv}" for pid, argv in processes_under(root, exclude).items()])


def force_clean(root: str, exclude: tuple[int, ...] = ()) -> None:
    """Undo by hand what the plugin failed to: unmount the file systems and binds, detach the loop devices (found
    first: a lazily unmounted FUSE file no longer shows its path), unmount the FUSE mounts, then stop the
    daemons by pid."""
    daemons, loops = processes_under(root, exclude), loops_under(root)
    ours = sorted((e for e in mount_entries() if e["mountpoint"].startswith(root + "/")),
                  key=lambda e: -len(e["mountpoint"]))
    for entry in [e for e in ours if not e["fstype"].startswith("fuse")]:
        unmount_by_hand(entry["mountpoint"])
    for device in loops:
        subprocess.run(["losetup", "-d", device], capture_output=True)
    for entry in [e for e in ours if e["fstype"].startswith("fuse")]:
        unmount_by_hand(entry["mountpoint"])
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while processes_under(root, exclude) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in processes_under(root, exclude):
        if pid in daemons:
            os.kill(pid, signal.SIGKILL)


def unmount_by_hand(path: str) -> None:
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)  # busy: detach it at least


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def workdir():
    """This module's directory; at its end nothing of ours may be left mounted, attached or running."""
    root = tempfile.mkdtemp(prefix="csinode", dir="/tmp")
    yield root
    left = leftovers(root)
    if left:
        force_clean(root)
    assert not left, f"left behind by the node tests: {left}"
    if not leftovers(root):
        shutil.rmtree(root)


class Robin:
    """robin's REST API, as an admin."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200, 201, 204), **kwargs):
        response = self.session.request(method, self.url + path, timeout=60, **kwargs)
        assert response.status_code in expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def robin(robin_url, admin_token):
    client = Robin(robin_url, admin_token)
    yield client
    client.session.close()


@pytest.fixture(scope="module")
def project(robin) -> str:
    name = unique("node")
    robin.call("POST", "/api/v2/projects", json={"name": name, "quota": {
        "max_bytes": 64 * GiB, "max_volumes": 200, "max_snapshots": 10}})
    return name


@dataclass
class Vol:
    kind: str
    name: str
    size: int
    context: dict[str, str]
    volume: dict = field(repr=False)

    @property
    def id(self) -> str:
        return VolumeRef(self.kind, self.context["project"], self.name).handle


@pytest.fixture(scope="session")
def cluster_identity(rados_cluster, ceph_conf) -> dict[str, str]:
    """The test cluster's fsid and v1 monitor addresses, read from Ceph and its ceph.conf, not from robin."""
    [mon_host] = [line.split("=", 1)[1] for line in open(ceph_conf) if line.strip().startswith("mon host")]
    return {"clusterID": rados_cluster.get_fsid(), "monitors": ",".join(re.findall(r"v1:([0-9.]+:[0-9]+)", mon_host))}


@pytest.fixture
def volumes(robin, project, cluster_identity):
    """volumes("rbd"|"cephfs", size) -> a new volume and the volume_context a node gets; purged afterwards. The
    context is written out as the controller and the provisioner document it (docs/kubernetes.md), not made by
    robin.client.volume_context, so that a node test also fails when that function changes what a node is given."""
    made: list[Vol] = []

    def make(kind: str = "rbd", size: int = 256 * MiB) -> Vol:
        collection, size_field = {"rbd": ("rbd-images", "size_bytes"), "cephfs": ("cephfs-paths", "quota_bytes")}[kind]
        name = unique("vol")
        volume = robin.call("POST", f"/api/v2/projects/{project}/{collection}", json={"name": name, size_field: size})
        context = {"type": kind, "project": project, "cluster": "default", **cluster_identity}
        if kind == "rbd":
            context |= {"pool": "rbd", "imageName": name}
        else:
            context |= {"fsName": "cephfs", "path": f"/robin/{project}/{name}"}
        made.append(Vol(kind, name, size, context, volume))
        return made[-1]

    yield make
    for vol in made:
        collection = "rbd-images" if vol.kind == "rbd" else "cephfs-paths"
        robin.call("DELETE", f"/api/v2/projects/{project}/{collection}/{vol.name}", params={"purge": "true"})


class NodeClient:
    """The node stub, paths for a test, and what the test staged and published, undone at teardown."""

    def __init__(self, shim: ShimProcess, secrets: dict[str, str], directory: str):
        self.shim, self.secrets, self.dir = shim, secrets, directory
        self.staged: dict[tuple[str, str], Vol] = {}
        self.published: dict[tuple[str, str], Vol] = {}

    @property
    def stub(self):
        return self.shim.node  # a new one after shim.restart()

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def stage(self, vol: Vol, capability=None, staging: str | None = None) -> str:
        staging = staging or self.path(f"staging-{vol.name}")
        try:
            os.makedirs(staging, exist_ok=True)  # the CO creates the staging directory
        except FileExistsError:
            pass  # a dead FUSE mount is there: it cannot be stat'ed, and is no directory to makedirs
        self.staged[(vol.id, staging)] = vol
        self.stub.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=vol.id, staging_target_path=staging, volume_capability=capability or mount_capability(""),
            secrets=self.secrets, volume_context=vol.context))
        return staging

    def publish(self, vol: Vol, staging: str, target: str | None = None, capability=None,
                readonly: bool = False) -> str:
        target = target or self.path(f"target-{vol.name}-{len(self.published)}")
        self.published[(vol.id, target)] = vol
        self.stub.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=vol.id, staging_target_path=staging, target_path=target,
            volume_capability=capability or mount_capability(""), readonly=readonly, volume_context=vol.context))
        return target

    def unpublish(self, vol: Vol, target: str) -> None:
        self.stub.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=vol.id, target_path=target))
        self.published.pop((vol.id, target), None)

    def unstage(self, vol: Vol, staging: str) -> None:
        self.stub.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=vol.id, staging_target_path=staging))
        self.staged.pop((vol.id, staging), None)

    def cleanup(self) -> list[str]:
        """Unpublish and unstage what is left through the plugin; then anything still there is a failure."""
        errors = []
        for (_, target), vol in list(self.published.items()):
            try:
                self.unpublish(vol, target)
            except grpc.RpcError as exc:
                errors.append(f"NodeUnpublishVolume {target}: {exc.code()} {exc.details()}")
        for (_, staging), vol in list(self.staged.items()):
            try:
                self.unstage(vol, staging)
            except grpc.RpcError as exc:
                errors.append(f"NodeUnstageVolume {staging}: {exc.code()} {exc.details()}")
        shim_pid = (self.shim.process.pid,)
        for root in (self.dir, str(self.shim.directory)):
            left = leftovers(root, shim_pid)
            if left:
                errors.append(f"left under {root}: {left}")
                force_clean(root, shim_pid)
        return errors


@pytest.fixture
def node(start_shim, volumes, node_secrets, workdir):
    """A node-only plugin (it needs neither robin nor the controller) and a NodeClient for it; requesting
    `volumes` first means the volumes are purged only after this fixture has unstaged them."""
    shim = start_shim(mode="node", node_id="node-a", directory=tempfile.mkdtemp(prefix="s", dir=workdir))
    client = NodeClient(shim, node_secrets, tempfile.mkdtemp(prefix="t", dir=workdir))
    yield client
    errors = client.cleanup()
    assert not errors, errors


@pytest.fixture
def mapped_node(start_shim, volumes, node_secrets, workdir):
    """A node-only plugin with a cluster map (ROBIN_CSI_CLUSTER_MAP) at `mapped_node.cluster_map`, not written yet."""
    directory = tempfile.mkdtemp(prefix="s", dir=workdir)
    cluster_map = os.path.join(directory, "config.json")
    shim = start_shim(mode="node", node_id="node-m", directory=directory,
                      extra_env={"ROBIN_CSI_CLUSTER_MAP": cluster_map})
    client = NodeClient(shim, node_secrets, tempfile.mkdtemp(prefix="t", dir=workdir))
    client.cluster_map = cluster_map
    yield client
    errors = client.cleanup()
    assert not errors, errors


# --- helpers --------------------------------------------------------------------------------------------------


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    return raised.value


def write_at(device: str, data: bytes, offset: int) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def staged_device(staging: str) -> str:
    entry = mounted(staging)
    assert entry is not None and entry["source"].startswith("/dev/loop"), entry
    return entry["source"]


def fs_uuid(device: str) -> str:
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", device], capture_output=True, text=True,
                          check=True).stdout.strip()


def volume_dirs(shim: ShimProcess) -> list[str]:
    return os.listdir(shim.state_dir) if shim.state_dir.exists() else []


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as status:
        effective = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    return bool(effective & (1 << 24))  # CAP_SYS_RESOURCE: growing a mounted ext4 needs it


def grow(robin: Robin, vol: Vol, size: int) -> None:
    robin.call("PATCH", f"/api/v2/projects/{vol.context['project']}/rbd-images/{vol.name}", json={"size_bytes": size})
    vol.size = size


# --- NodeGetCapabilities, NodeGetInfo -------------------------------------------------------------------------


def test_get_capabilities(node):
    capabilities = node.stub.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest()).capabilities
    assert {c.rpc.type for c in capabilities} == {RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME,
                                                  RPC.VOLUME_CONDITION}


def test_get_info(node):
    info = node.stub.NodeGetInfo(pb.NodeGetInfoRequest())
    assert info.node_id == "node-a"
    assert info.max_volumes_per_node == 0


# --- requests missing a required field --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["volume_id", "target_path", "volume_capability"])
def test_publish_without_a_required_field_is_invalid(node, missing):
    request = pb.NodePublishVolumeRequest(volume_id="rbd:p:v", staging_target_path=node.path("staging"),
                                          target_path=node.path("target"), volume_capability=mount_capability())
    request.ClearField(missing)
    error = rpc_error(node.stub.NodePublishVolume, request)
    assert error.code() == Code.INVALID_ARGUMENT and missing in error.details()
    assert not os.path.exists(node.path("target"))


@pytest.mark.parametrize("missing", ["volume_id", "target_path"])
def test_unpublish_without_a_required_field_is_invalid(node, missing):
    request = pb.NodeUnpublishVolumeRequest(volume_id="rbd:p:v", target_path=node.path("target"))
    request.ClearField(missing)
    error = rpc_error(node.stub.NodeUnpublishVolume, request)
    assert error.code() == Code.INVALID_ARGUMENT and missing in error.details()


@pytest.mark.parametrize("missing", ["volume_id", "staging_target_path", "volume_capability"])
def test_stage_without_a_required_field_is_invalid(node, volumes, missing):
    vol = volumes("rbd")
    request = pb.NodeStageVolumeRequest(volume_id=vol.id, staging_target_path=node.path("staging"),
                                        volume_capability=mount_capability(), secrets=node.secrets,
                                        volume_context=vol.context)
    request.ClearField(missing)
    error = rpc_error(node.stub.NodeStageVolume, request)
    assert error.code() == Code.INVALID_ARGUMENT and missing in error.details()
    assert volume_dirs(node.shim) == []


@pytest.mark.parametrize("missing", ["userID", "userKey", "monitors"])
def test_stage_without_credentials_or_monitors_is_invalid(node, volumes, missing):
    vol = volumes("rbd")
    secrets = {k: v for k, v in node.secrets.items() if k != missing}
    context = {k: v for k, v in vol.context.items() if k != missing}
    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=node.path("staging"), volume_capability=mount_capability(),
        secrets=secrets, volume_context=context))
    assert error.code() == Code.INVALID_ARGUMENT
    assert ("monitors" if missing == "monitors" else "userID and userKey") in error.details()
    assert mounted(node.path("staging")) is None and volume_dirs(node.shim) == []


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_stage_with_a_wrong_key_fails_and_leaves_nothing(node, volumes, kind):
    vol = volumes(kind)
    key = node.secrets["userKey"]
    wrong = key[:20] + ("A" if key[20] != "A" else "B") + key[21:]  # still a well-formed key, not the user's
    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=node.path("staging"), volume_capability=mount_capability(),
        secrets={**node.secrets, "userKey": wrong}, volume_context=vol.context))
    assert error.code() == Code.INTERNAL and ("rbd-fuse" if kind == "rbd" else "ceph-fuse") in error.details()
    assert mounted(node.path("staging")) is None and volume_dirs(node.shim) == []
    assert not processes_under(str(node.shim.directory), (node.shim.process.pid,))


@pytest.mark.parametrize("missing", ["volume_id", "staging_target_path"])
def test_unstage_without_a_required_field_is_invalid(node, missing):
    request = pb.NodeUnstageVolumeRequest(volume_id="rbd:p:v", staging_target_path=node.path("staging"))
    request.ClearField(missing)
    error = rpc_error(node.stub.NodeUnstageVolume, request)
    assert error.code() == Code.INVALID_ARGUMENT and missing in error.details()


@pytest.mark.parametrize("missing", ["volume_id", "volume_path"])
def test_volume_stats_without_a_required_field_is_invalid(node, missing):
    request = pb.NodeGetVolumeStatsRequest(volume_id="rbd:p:v", volume_path=node.dir)
    request.ClearField(missing)
    error = rpc_error(node.stub.NodeGetVolumeStats, request)
    assert error.code() == Code.INVALID_ARGUMENT and missing in error.details()


@pytest.mark.parametrize("missing", ["volume_id", "volume_path"])
def test_expand_without_a_required_field_is_invalid(node, missing):
    request = pb.NodeExpandVolumeRequest(volume_id="rbd:p:v", volume_path=node.dir,
                                         capacity_range=pb.CapacityRange(required_bytes=GiB))
    request.ClearField(missing)
    error = rpc_error(node.stub.NodeExpandVolume, request)
    assert error.code() == Code.INVALID_ARGUMENT and missing in error.details()


def test_publish_of_an_unstaged_volume_fails_its_precondition(node, volumes):
    vol = volumes("rbd")
    error = rpc_error(node.stub.NodePublishVolume, pb.NodePublishVolumeRequest(
        volume_id=vol.id, staging_target_path=node.path("staging"), target_path=node.path("target"),
        volume_capability=mount_capability(), volume_context=vol.context))
    assert error.code() == Code.FAILED_PRECONDITION
    assert not os.path.exists(node.path("target"))


# --- unknown volumes, wrong paths -----------------------------------------------------------------------------


def test_volume_stats_of_an_unknown_volume_is_not_found(node):
    for path in (node.dir, node.path("does-not-exist")):
        error = rpc_error(node.stub.NodeGetVolumeStats,
                          pb.NodeGetVolumeStatsRequest(volume_id="rbd:nowhere:nothing", volume_path=path))
        assert error.code() == Code.NOT_FOUND


def test_volume_stats_on_a_path_that_is_not_the_volume_is_not_found(node, volumes):
    vol, other = volumes("rbd"), volumes("cephfs")
    staging = node.stage(vol)
    target = node.publish(vol, staging)
    other_target = node.publish(other, node.stage(other))
    for path in (node.path("does-not-exist"), node.dir, other_target):
        error = rpc_error(node.stub.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(volume_id=vol.id,
                                                                                     volume_path=path))
        assert error.code() == Code.NOT_FOUND, path
    assert node.stub.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(volume_id=vol.id, volume_path=target)).usage


def test_expand_of_an_unknown_volume_is_not_found(node):
    for path in (node.dir, node.path("does-not-exist")):
        error = rpc_error(node.stub.NodeExpandVolume, pb.NodeExpandVolumeRequest(
            volume_id="rbd:nowhere:nothing", volume_path=path, capacity_range=pb.CapacityRange(required_bytes=GiB)))
        assert error.code() == Code.NOT_FOUND


# --- the whole lifecycle --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_stage_publish_unpublish_unstage(node, volumes, kind):
    vol = volumes(kind)
    staging = node.stage(vol)
    assert mounted(staging) is not None and volume_dirs(node.shim)
    target = node.publish(vol, staging)
    assert mounted(target)["device"] == mounted(staging)["device"]
    assert {"nodev", "nosuid"} <= set(mounted(staging)["options"]) & set(mounted(target)["options"])
    write(os.path.join(target, "hello.txt"), "hello")
    assert read(os.path.join(staging, "hello.txt")) == "hello"

    node.unpublish(vol, target)
    assert not os.path.exists(target)  # csi-sanity: NodeUnpublishVolume removes the target
    node.unstage(vol, staging)
    assert mounted(staging) is None
    assert volume_dirs(node.shim) == []
    assert leftovers(node.dir) == [] and leftovers(str(node.shim.directory), (node.shim.process.pid,)) == []


def _claimed_pv(kube, kind: str, ns: str) -> dict:
    """A namespace, a class of robin's provisioner for `kind` and a claim of it; the PV, once the claim is Bound."""
    from tests.support.kube import create, kubectl

    claim, klass = unique("pvc"), unique("sc")
    create(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
           {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": klass},
            "provisioner": f"robin.io/{kind}", "reclaimPolicy": "Retain"},
           {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": ns},
            "spec": {"storageClassName": klass, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "256Mi"}}}})
    kubectl(kube, "wait", "-n", ns, "--for=jsonpath={.status.phase}=Bound", "--timeout=120s", f"pvc/{claim}")
    bound = json.loads(kubectl(kube, "get", "-n", ns, "pvc", claim, "-o", "json"))
    return json.loads(kubectl(kube, "get", "pv", bound["spec"]["volumeName"], "-o", "json"))


@pytest.fixture
def provisioned(robin_url, admin_token, robin):
    """provisioned(kind) -> the Vol of a PV `robin provisioner` made for a claim on the test Kubernetes API server: its
    csi volumeHandle and volumeAttributes, as the kubelet hands them to a node. Its project (the namespace) is
    emptied and deleted afterwards."""
    from tests.kube_apiserver import KubeApiServer
    from tests.support.kube import KUBECTL
    from tests.support.provisioner import ProvisionerProcess

    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    made: list[Vol] = []

    def provision(kind: str) -> Vol:
        ns = unique("ns")
        with KubeApiServer.running() as kube:
            process = ProvisionerProcess(kube.kubeconfig_path, robin_url, admin_token, unique("prov")).wait_serving()
            try:
                pv = _claimed_pv(kube, kind, ns)
            finally:
                process.stop()
        source, name = pv["spec"]["csi"], pv["metadata"]["name"]
        collection = "rbd-images" if kind == "rbd" else "cephfs-paths"
        made.append(Vol(kind, name, 256 * MiB, source["volumeAttributes"],
                        robin.call("GET", f"/api/v2/projects/{ns}/{collection}/{name}")))
        assert made[-1].id == source["volumeHandle"], source
        return made[-1]

    yield provision
    for vol in made:
        collection = "rbd-images" if vol.kind == "rbd" else "cephfs-paths"
        robin.call("DELETE", f"/api/v2/projects/{vol.context['project']}/{collection}/{vol.name}",
                   params={"purge": "true"})
        robin.call("DELETE", f"/api/v2/projects/{vol.context['project']}")


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_a_pv_the_provisioner_made_is_staged_and_published(provisioned, node, kind):
    """The provisioner's PV, fed to the node as the kubelet feeds it: what the one writes, the other can mount."""
    vol = provisioned(kind)
    staging = node.stage(vol)
    target = node.publish(vol, staging)
    write(os.path.join(target, "from-a-pod.txt"), "hello")
    assert read(os.path.join(staging, "from-a-pod.txt")) == "hello"
    assert {"nodev", "nosuid"} <= set(mounted(target)["options"])
    node.unpublish(vol, target)
    node.unstage(vol, staging)
    assert mounted(staging) is None


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_every_call_is_idempotent(node, volumes, kind, workdir):
    def ours() -> list[dict]:  # other programs on this machine mount and unmount meanwhile
        return [e for e in mount_entries() if e["mountpoint"].startswith(workdir + "/")]

    vol = volumes(kind)
    initially = ours()
    staging = node.stage(vol)
    staged = ours()
    node.stage(vol, staging=staging)
    assert ours() == staged
    target = node.publish(vol, staging)
    node.publish(vol, staging, target=target)
    assert len(ours()) == len(staged) + 1  # one publish, however often asked
    for _ in range(2):
        node.unpublish(vol, target)
        assert not os.path.exists(target)
    for _ in range(2):
        node.unstage(vol, staging)
        assert mounted(staging) is None
    assert ours() == initially


def test_staging_again_with_another_access_type_already_exists(node, volumes):
    vol = volumes("rbd")
    staging = node.stage(vol)
    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=staging, volume_capability=block_capability(),
        secrets=node.secrets, volume_context=vol.context))
    assert error.code() == Code.ALREADY_EXISTS


def test_concurrent_calls_on_one_volume_are_aborted(node, volumes):
    vol = volumes("rbd")
    staging = node.path("staging")
    os.makedirs(staging)
    node.staged[(vol.id, staging)] = vol
    barrier, codes = threading.Barrier(4), []
    request = pb.NodeStageVolumeRequest(volume_id=vol.id, staging_target_path=staging,
                                        volume_capability=mount_capability(), secrets=node.secrets,
                                        volume_context=vol.context)

    def stage():
        barrier.wait()
        try:
            node.stub.NodeStageVolume(request)
            codes.append(Code.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())

    threads = [threading.Thread(target=stage) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert Code.ABORTED in codes and Code.OK in codes and set(codes) <= {Code.OK, Code.ABORTED}, codes
    assert mounted(staging) is not None


# --- what csi-sanity cannot check ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_data_outlives_unstage_and_comes_back_on_the_next_stage(node, volumes, kind):
    vol = volumes(kind)
    staging = node.stage(vol)
    target = node.publish(vol, staging)
    write(os.path.join(target, "kept.txt"), "written before unstage")
    node.unpublish(vol, target)
    node.unstage(vol, staging)

    staging = node.stage(vol)
    target = node.publish(vol, staging)
    assert read(os.path.join(target, "kept.txt")) == "written before unstage"


def test_mkfs_runs_on_a_blank_image_only(node, volumes):
    vol = volumes("rbd", 512 * MiB)  # mkfs.xfs wants 300 MB at least
    staging = node.stage(vol, mount_capability("xfs"))
    assert mounted(staging)["fstype"] == "xfs"
    first_uuid = fs_uuid(staged_device(staging))
    write(os.path.join(staging, "file"), "data")
    node.unstage(vol, staging)

    staging = node.stage(vol, mount_capability(""))  # no type asked: the one on the image is mounted
    assert fs_uuid(staged_device(staging)) == first_uuid
    assert read(os.path.join(staging, "file")) == "data"
    node.unstage(vol, staging)

    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=staging, volume_capability=mount_capability("ext4"),
        secrets=node.secrets, volume_context=vol.context))
    assert error.code() == Code.FAILED_PRECONDITION and "xfs" in error.details()
    assert mounted(staging) is None and volume_dirs(node.shim) == []


def test_an_image_with_data_but_no_file_system_is_not_formatted(node, volumes):
    vol = volumes("rbd")
    staging = node.stage(vol, block_capability())
    target = node.publish(vol, staging, capability=block_capability())
    write_at(target, b"raw bytes, not a file system" * 100, 0)
    node.unpublish(vol, target)
    node.unstage(vol, staging)

    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=staging, volume_capability=mount_capability(),
        secrets=node.secrets, volume_context=vol.context))
    assert error.code() == Code.FAILED_PRECONDITION and "not formatting" in error.details()
    assert mounted(staging) is None and volume_dirs(node.shim) == []

    staging = node.stage(vol, block_capability())
    target = node.publish(vol, staging, capability=block_capability())
    with open(target, "rb") as device:
        assert device.read(28) == b"raw bytes, not a file system"


def test_a_cephfs_volume_published_twice_shares_its_files(node, volumes):
    vol = volumes("cephfs")
    staging = node.stage(vol)
    first, second = node.publish(vol, staging), node.publish(vol, staging)
    write(os.path.join(first, "shared.txt"), "from the first target")
    assert read(os.path.join(second, "shared.txt")) == "from the first target"
    os.mkdir(os.path.join(second, "dir"))
    assert os.listdir(first) and os.path.isdir(os.path.join(first, "dir"))


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_a_plugin_restart_between_stage_and_publish(node, volumes, kind, stop):
    vol = volumes(kind)
    staging = node.stage(vol)
    shim_pid = (node.shim.process.pid,)
    daemons = processes_under(str(node.shim.directory), shim_pid)
    assert daemons, "no FUSE daemon runs for the staged volume"
    # Each in a session of its own, not the plugin's: a signal to the plugin's process group never reaches them.
    assert all(os.getsid(pid) == pid != os.getsid(node.shim.process.pid) for pid in daemons)

    if stop == "SIGKILL":
        node.shim.restart()  # the new plugin knows only what the kernel tells it
    else:
        node.shim.stop()  # a clean shutdown leaves the daemons running too
        node.shim.start()
    assert set(processes_under(str(node.shim.directory), (node.shim.process.pid,))) == set(daemons)
    write(os.path.join(staging, "during-restart.txt"), "still mounted")

    usage = node.stub.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(volume_id=vol.id, volume_path=staging)).usage
    assert usage[0].total > 0  # the new plugin finds the volume staged
    node.stage(vol, staging=staging)  # staged already: found in the mount table
    target = node.publish(vol, staging)
    assert read(os.path.join(target, "during-restart.txt")) == "still mounted"
    node.unpublish(vol, target)
    node.unstage(vol, staging)
    # The daemons were the old plugin's children: the new one still waited for them to exit.
    assert not processes_under(str(node.shim.directory), (node.shim.process.pid,))
    assert not [pid for pid in daemons if running(pid)]


# --- stages whose FUSE daemon died (the plugin's container ended) -----------------------------------------------

RECOVERY_TIMEOUT_S = 180  # a new FUSE daemon connecting to the cluster, e2fsck, on a loaded machine


def transport_gone(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def kill_daemons(node: NodeClient, ceph_conf: str) -> list[int]:
    """SIGKILL the staged volumes' FUSE daemons, by the pids their mounts' state names (never by name); then
    evict their CephFS sessions, as an operator would: the MDS would otherwise wait for a dead client's caps for
    minutes, and removing the volume's path meanwhile times out."""
    daemons = list(processes_under(str(node.shim.directory), (node.shim.process.pid,)))
    assert daemons, "no FUSE daemon runs for the staged volume"
    for pid in daemons:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(running(pid) for pid in daemons), EXIT_TIMEOUT_S, "the killed FUSE daemons")
    evict_sessions(ceph_conf, daemons)
    return daemons


def evict_sessions(ceph_conf: str, pids: list[int]) -> None:
    def tell(*command: str) -> str:
        return subprocess.run(["ceph", "--conf", ceph_conf, "tell", "mds.cephfs:0", *command], capture_output=True,
                              text=True, timeout=60, check=True).stdout

    for session in json.loads(tell("client", "ls", "--format", "json")):
        if session.get("client_metadata", {}).get("pid") in {str(pid) for pid in pids}:
            tell("client", "evict", f"id={session['id']}")


def stats(node: NodeClient, vol: Vol, path: str):
    return node.stub.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(volume_id=vol.id, volume_path=path))


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_a_stage_whose_fuse_daemon_died_is_mounted_again_when_the_plugin_starts(node, volumes, kind, ceph_conf):
    vol = volumes(kind)
    staging = node.stage(vol)
    target, readonly = node.publish(vol, staging), node.publish(vol, staging, readonly=True)
    write(os.path.join(target, "before.txt"), "written before the daemon died")
    os.sync()  # down to the cluster: what the kill may take is only what nobody flushed
    assert stats(node, vol, target).volume_condition.abnormal is False

    old = kill_daemons(node, ceph_conf)  # the container's end: its daemons, and the plugin with them
    if kind == "cephfs":
        assert all(transport_gone(path) for path in (staging, target, readonly))
    node.shim.restart()
    wait_until(lambda: f"recovered {vol.id}" in node.shim.log(), RECOVERY_TIMEOUT_S, "the recovery")

    for path in (staging, target, readonly):
        assert read(os.path.join(path, "before.txt")) == "written before the daemon died", path
    assert "ro" in mounted(readonly)["options"] and {"nodev", "nosuid"} <= set(mounted(target)["options"])
    with pytest.raises(OSError) as refused:
        write(os.path.join(readonly, "refused.txt"), "refused")
    assert refused.value.errno == errno.EROFS
    write(os.path.join(target, "after.txt"), "written after the recovery")
    assert read(os.path.join(staging, "after.txt")) == "written after the recovery"
    assert not set(old) & set(processes_under(str(node.shim.directory), (node.shim.process.pid,)))
    assert stats(node, vol, target).volume_condition.abnormal is False
    assert f"{vol.id}: its FUSE daemon is gone" in node.shim.log()

    # In Ceph: a stage made anew reads it from the cluster.
    node.unpublish(vol, readonly)
    node.unpublish(vol, target)
    node.unstage(vol, staging)
    staging = node.stage(vol)
    assert read(os.path.join(staging, "after.txt")) == "written after the recovery"
    assert read(os.path.join(staging, "before.txt")) == "written before the daemon died"


@pytest.mark.parametrize("call", ["NodeStageVolume", "NodePublishVolume", "NodeGetVolumeStats"])
def test_a_dead_cephfs_stage_is_recovered_by_the_next_call_on_it(node, volumes, fs, ceph_conf, call):
    vol = volumes("cephfs")
    staging = node.stage(vol)
    target = node.publish(vol, staging)
    kill_daemons(node, ceph_conf)
    assert transport_gone(target)
    # No restart: the call finds the stage dead, mounts it again and binds the target again.
    if call == "NodeStageVolume":
        node.stage(vol, staging=staging)
    elif call == "NodePublishVolume":
        node.publish(vol, staging)
    else:
        assert stats(node, vol, target).volume_condition.abnormal is False
    assert f"recovered {vol.id}" in node.shim.log()
    write(os.path.join(staging, "seen-in-ceph"), "through the new ceph-fuse")
    assert read(os.path.join(target, "seen-in-ceph")) == "through the new ceph-fuse"
    handle = fs.open(f"{vol.context['path']}/seen-in-ceph", "r", 0)
    try:
        assert fs.read(handle, 0, 64) == b"through the new ceph-fuse"
    finally:
        fs.close(handle)


def test_a_dead_fuse_mount_that_is_not_robins_is_left_alone(node, volumes, ceph_conf):
    vol = volumes("cephfs")
    target = node.publish(vol, node.stage(vol))
    foreign = node.path("foreign")
    os.makedirs(foreign)
    # rbd-fuse showing no image (none has that name): a FUSE mount of another program's, that holds nothing in
    # the cluster once killed (a dead ceph-fuse's session would hold the MDS's caps until it times out).
    process = subprocess.Popen(["rbd-fuse", "-f", "-c", ceph_conf, "--id", "admin", "-p", "rbd", "-r",
                                unique("absent"), foreign],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_until(lambda: mounted(foreign) is not None or process.poll() is not None, 60, "the foreign rbd-fuse")
        assert mounted(foreign) is not None
        kill_daemons(node, ceph_conf)
        process.send_signal(signal.SIGKILL)
        process.wait()
        node.shim.restart()
        wait_until(lambda: f"recovered {vol.id}" in node.shim.log(), RECOVERY_TIMEOUT_S, "the recovery")
        assert os.listdir(target) == []
        assert mounted(foreign) is not None and transport_gone(foreign)  # still there, still dead: not ours
        assert foreign not in node.shim.log()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        unmount_by_hand(foreign)


def test_a_dead_stage_without_a_record_is_reported_abnormal(node, volumes, ceph_conf):
    vol = volumes("cephfs")
    staging = node.stage(vol)
    target = node.publish(vol, staging)
    (volume_dir,) = volume_dirs(node.shim)
    os.unlink(os.path.join(node.shim.state_dir, volume_dir, "stage.json"))  # as an older plugin staged it
    kill_daemons(node, ceph_conf)
    condition = stats(node, vol, target).volume_condition
    assert condition.abnormal and "no stage record" in condition.message
    assert mounted(target) is not None and transport_gone(target)  # left as it is, for its pods to be recreated
    node.unpublish(vol, target)  # and the pods' end still cleans it up
    node.unstage(vol, staging)
    assert mounted(staging) is None and volume_dirs(node.shim) == []


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_a_read_only_publish_refuses_writes(node, volumes, kind):
    vol = volumes(kind)
    staging = node.stage(vol)
    writable, readonly = node.publish(vol, staging), node.publish(vol, staging, readonly=True)
    assert "ro" in mounted(readonly)["options"] and "rw" in mounted(writable)["options"]
    for path in (staging, writable, readonly):  # a pod's device nodes and set-id files stay inert, ro or not
        assert {"nodev", "nosuid"} <= set(mounted(path)["options"]), path
    write(os.path.join(writable, "file"), "written")
    assert read(os.path.join(readonly, "file")) == "written"
    with pytest.raises(OSError) as refused:
        write(os.path.join(readonly, "another"), "refused")
    assert refused.value.errno == errno.EROFS
    node.publish(vol, staging, target=readonly, readonly=True)  # again, the same: fine
    error = rpc_error(node.stub.NodePublishVolume, pb.NodePublishVolumeRequest(
        volume_id=vol.id, staging_target_path=staging, target_path=readonly, volume_capability=mount_capability(""),
        readonly=False, volume_context=vol.context))
    assert error.code() == Code.ALREADY_EXISTS


def test_a_block_volume_is_published_as_a_device(node, volumes, robin):
    vol = volumes("rbd", 64 * MiB)
    staging = node.stage(vol, block_capability())
    assert mounted(staging) is None and len(loops_under(str(node.shim.directory))) == 1
    node.stage(vol, block_capability(), staging=staging)
    target = node.publish(vol, staging, capability=block_capability())
    assert stat.S_ISBLK(os.stat(target).st_mode)
    pattern = os.urandom(MiB)
    write_at(target, pattern, 8 * MiB)

    stats = node.stub.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(volume_id=vol.id, volume_path=target))
    assert [(u.unit, u.total) for u in stats.usage] == [(pb.VolumeUsage.BYTES, 64 * MiB)]

    readonly = node.publish(vol, staging, capability=block_capability(), readonly=True)
    with open(readonly, "rb") as device:
        device.seek(8 * MiB)
        assert device.read(MiB) == pattern
    with pytest.raises(OSError) as refused:
        write_at(readonly, b"refused", 8 * MiB)
    assert refused.value.errno in (errno.EPERM, errno.EROFS, errno.EACCES)  # a read-only device: EPERM
    node.unpublish(vol, readonly)
    assert len(loops_under(str(node.shim.directory))) == 1  # the read-only target's own device went with it

    grow(robin, vol, 128 * MiB)
    expanded = node.stub.NodeExpandVolume(pb.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=target, staging_target_path=staging, volume_capability=block_capability(),
        capacity_range=pb.CapacityRange(required_bytes=128 * MiB)))
    assert expanded.capacity_bytes == 128 * MiB

    node.unpublish(vol, target)
    node.unstage(vol, staging)
    staging = node.stage(vol, block_capability())
    target = node.publish(vol, staging, capability=block_capability())
    with open(target, "rb") as device:
        device.seek(8 * MiB)
        assert device.read(MiB) == pattern


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_volume_stats_report_the_volume_size(node, volumes, kind):
    vol = volumes(kind, GiB)
    staging = node.stage(vol)
    target = node.publish(vol, staging)
    write(os.path.join(target, "file"), "x" * MiB)
    for path in (staging, target):
        usage = {u.unit: u for u in node.stub.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
            volume_id=vol.id, volume_path=path, staging_target_path=staging)).usage}
        space = usage[pb.VolumeUsage.BYTES]
        if kind == "cephfs":
            assert space.total == GiB  # the quota
        else:
            assert 0.9 * GiB < space.total <= GiB  # ext4's own metadata takes a little
            assert usage[pb.VolumeUsage.INODES].total > usage[pb.VolumeUsage.INODES].used > 0
            assert 0 < space.used < space.total  # CephFS counts a directory's bytes lazily: no check there
        assert 0 < space.available <= space.total - space.used


@pytest.mark.parametrize("fs_type", ["xfs", "ext4"])
def test_expand_after_publish_grows_the_file_system(node, volumes, robin, fs_type):
    if fs_type == "ext4" and not has_cap_sys_resource():
        pytest.skip("growing a mounted ext4 needs CAP_SYS_RESOURCE, which this machine withholds even from root")
    vol = volumes("rbd", 512 * MiB)
    staging = node.stage(vol, mount_capability(fs_type))
    target = node.publish(vol, staging, capability=mount_capability(fs_type))
    write(os.path.join(target, "file"), "before growing")
    before = os.statvfs(target)

    grow(robin, vol, GiB)
    expanded = node.stub.NodeExpandVolume(pb.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=target, staging_target_path=staging,
        volume_capability=mount_capability(fs_type), capacity_range=pb.CapacityRange(required_bytes=GiB)))
    assert expanded.capacity_bytes == GiB
    after = os.statvfs(target)
    assert after.f_blocks * after.f_frsize > 1.8 * before.f_blocks * before.f_frsize
    assert read(os.path.join(target, "file")) == "before growing"
    again = node.stub.NodeExpandVolume(pb.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=target, capacity_range=pb.CapacityRange(required_bytes=GiB)))
    assert again.capacity_bytes == GiB  # already grown: fine


def test_expand_of_a_cephfs_volume_reports_its_quota(node, volumes):
    vol = volumes("cephfs", GiB)
    target = node.publish(vol, node.stage(vol))
    expanded = node.stub.NodeExpandVolume(pb.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=target, capacity_range=pb.CapacityRange(required_bytes=GiB)))
    assert expanded.capacity_bytes == GiB


# --- monitors looked up in the node's cluster map -------------------------------------------------------------

MOVED_MONITOR = "127.0.0.1:9"  # where an old PV says a monitor is: nothing listens there any more


def write_cluster_map(path: str, clusters: list[dict]) -> None:
    with open(path + ".tmp", "w") as handle:
        json.dump(clusters, handle)
    os.replace(path + ".tmp", path)  # as kubelet swaps a ConfigMap's files: whole


def staged_mon_host(shim: ShimProcess) -> str:
    (volume_dir,) = volume_dirs(shim)
    with open(os.path.join(shim.state_dir, volume_dir, "ceph.conf")) as conf:
        return next(line.split("=", 1)[1].strip() for line in conf if line.startswith("mon_host"))


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_an_old_pv_whose_monitor_moved_stages_with_the_changed_cluster_map(mapped_node, volumes, kind):
    node = mapped_node
    current = volumes(kind)
    fsid, monitors = current.context["clusterID"], current.context["monitors"].split(",")
    write_cluster_map(node.cluster_map, [{"clusterID": "another-cluster", "monitors": ["192.0.2.1:6789"]}])
    staging = node.stage(current)  # its cluster is not in the map: the PV's own monitors
    assert all(m in staged_mon_host(node.shim) for m in monitors)
    node.unstage(current, staging)

    old = volumes(kind)
    old.context = {**old.context, "monitors": MOVED_MONITOR}  # made before the monitor moved
    write_cluster_map(node.cluster_map, [{"clusterID": "another-cluster", "monitors": ["192.0.2.1:6789"]},
                                         {"clusterID": fsid, "monitors": monitors, "rbd": {}}])
    staging = node.stage(old)  # the map, read again, wins over the PV
    assert MOVED_MONITOR not in staged_mon_host(node.shim)
    target = node.publish(old, staging)
    write(os.path.join(target, "file"), "staged through the map's monitors")
    assert read(os.path.join(staging, "file")) == "staged through the map's monitors"


def test_a_cluster_missing_from_the_map_and_the_context_fails_its_precondition(mapped_node, volumes):
    node = mapped_node
    vol = volumes("cephfs")
    context = {k: v for k, v in vol.context.items() if k != "monitors"}
    write_cluster_map(node.cluster_map, [{"clusterID": "another-cluster", "monitors": ["192.0.2.1:6789"]}])
    for missing in ("listed nowhere", "no map file"):
        if missing == "no map file":
            os.unlink(node.cluster_map)
        error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
            volume_id=vol.id, staging_target_path=node.path("staging"), volume_capability=mount_capability(""),
            secrets=node.secrets, volume_context=context))
        assert error.code() == Code.FAILED_PRECONDITION, missing
        assert vol.context["clusterID"] in error.details() and node.cluster_map in error.details()
        assert mounted(node.path("staging")) is None and volume_dirs(node.shim) == []


@pytest.mark.parametrize("content", ["{not json", '{"clusterID": "x"}', '[{"monitors": ["10.0.0.1:6789"]}]',
                                     '[{"clusterID": "x", "monitors": "10.0.0.1:6789"}]',
                                     '[{"clusterID": "x", "monitors": ["10.0.0.1:6789 -o evil"]}]'])
def test_a_malformed_cluster_map_fails_its_precondition(mapped_node, volumes, content):
    node = mapped_node
    vol = volumes("rbd")
    with open(node.cluster_map, "w") as handle:
        handle.write(content)
    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=node.path("staging"), volume_capability=mount_capability(),
        secrets=node.secrets, volume_context=vol.context))
    assert error.code() == Code.FAILED_PRECONDITION
    assert node.cluster_map in error.details() and "malformed" in error.details()
    assert mounted(node.path("staging")) is None and volume_dirs(node.shim) == []


# --- the CephFS client: the kernel's where the node has it, else ceph-fuse ----------------------------------------


def kernel_has_ceph() -> bool:
    with open("/proc/filesystems") as listed:
        return any(line.split()[-1:] == ["ceph"] for line in listed)


@pytest.mark.skipif(kernel_has_ceph(), reason="this machine's kernel has CephFS: the fallback cannot be seen")
def test_without_a_kernel_client_cephfs_falls_back_to_ceph_fuse_and_says_so(node, volumes):
    vol = volumes("cephfs")
    staging = node.stage(vol)
    assert mounted(staging)["fstype"].startswith("fuse")
    assert f"{vol.id}: ceph-fuse, as this node's kernel has no ceph file system" in node.shim.log()

    fuse = volumes("cephfs")
    fuse.context = {**fuse.context, "mounter": "fuse", "fuseMountOptions": "noatime"}
    staging = node.stage(fuse)
    assert mounted(staging)["fstype"].startswith("fuse") and "noatime" in mounted(staging)["options"]
    assert f"{fuse.id}: ceph-fuse, as its volume context asks" in node.shim.log()


@pytest.mark.skipif(kernel_has_ceph(), reason="this machine's kernel has CephFS: the refusal cannot be seen")
def test_asking_for_the_kernel_client_where_there_is_none_fails_its_precondition(node, volumes):
    vol = volumes("cephfs")
    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=node.path("staging"), volume_capability=mount_capability(""),
        secrets=node.secrets, volume_context={**vol.context, "mounter": "kernel"}))
    assert error.code() == Code.FAILED_PRECONDITION and "mounter fuse" in error.details()
    assert mounted(node.path("staging")) is None and volume_dirs(node.shim) == []


@pytest.mark.parametrize("context", [{"mounter": "nfs"}, {"kernelMountOptions": "secretfile=/etc/shadow"},
                                     {"fuseMountOptions": "allow_other -o x"}])
def test_bad_mount_options_are_invalid(node, volumes, context):
    vol = volumes("cephfs")
    error = rpc_error(node.stub.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=node.path("staging"), volume_capability=mount_capability(""),
        secrets=node.secrets, volume_context={**vol.context, **context}))
    assert error.code() == Code.INVALID_ARGUMENT and list(context)[0] in error.details()
    assert mounted(node.path("staging")) is None and volume_dirs(node.shim) == []
