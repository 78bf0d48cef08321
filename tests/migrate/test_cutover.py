"""The Kubernetes cut-over of a migrated GlusterFS PV, end to end: the test Kubernetes API server (driven by the
real kubectl where a person would use it), robin's API under gunicorn on the session's database and the real Ceph
dev cluster. Crashes are simulated by failing the API server's answers at the step after the one to survive."""
from __future__ import annotations

import json

import pytest
import rbd

from robin.client import VolumeRef
from robin.kube.client import KubeError
from robin.kube.volumes import our_volume
from robin.migrate.cutover import (
    MIGRATED_CLAIM,
    MIGRATED_FROM,
    MIGRATED_TO,
    cutover,
    finalize,
    pods_using,
)
from robin.migrate.kubernetes import KubeMigrationError, destination_name, gluster_pvs
from tests.conftest import unique
from tests.migrate.conftest_k8s import (
    GLUSTER_SERVERS,
    GiB,
    get,
    gluster_claim,
    kube_client,
    kube_server,
    robin_class,
    robin_client,
)
from tests.support.kube import KUBECTL, create, kubectl
from tests.support.provisioner import ProvisionerProcess

pytestmark = [pytest.mark.integration, pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")]
__all__ = ["gluster_claim", "kube_client", "kube_server", "robin_client"]  # fixtures, used by name
TIMEOUT = 60


def start_pod(server, namespace: str, claim: str, phase: str = "Running", node: str | None = "node-1") -> str:
    """A pod using the claim, scheduled to `node` (None: not scheduled), in `phase` (nothing runs pods here: the
    test writes what the scheduler and a kubelet would)."""
    name = unique("web")
    spec = {"containers": [{"name": "web", "image": "nginx:1.27"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}
    if node:
        spec["nodeName"] = node
    create(server, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                    "spec": spec})
    kubectl(server, "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": phase}}))
    return name


def refused(code: str, call, *args, **kwargs) -> KubeMigrationError:
    with pytest.raises(KubeMigrationError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def assert_untouched(server, setup) -> None:
    """The state before a cut-over: the GlusterFS PV as heketi made it, bound to the original claim."""
    pv = get(server, "pv", setup.pv)
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" and pv["status"]["phase"] == "Bound"
    assert MIGRATED_TO not in pv["metadata"].get("annotations", {})
    claim = get(server, "pvc", setup.claim, setup.namespace)
    assert claim["metadata"]["uid"] == setup.claim_uid and claim["spec"]["volumeName"] == setup.pv
    assert get(server, "pv", setup.ref.name) is None


def assert_cut_over(server, robin_client, setup) -> dict:
    """The claim of the same name, new, Bound to a PV the provisioner would have made for the robin volume; the old
    PV kept (Retain, Released) with what it was cut over to. The new claim."""
    claim = get(server, "pvc", setup.claim, setup.namespace)
    assert claim["metadata"]["uid"] != setup.claim_uid and claim["status"]["phase"] == "Bound"
    assert claim["spec"]["volumeName"] == setup.ref.name and claim["spec"]["storageClassName"] == setup.storage_class
    assert claim["metadata"]["labels"] == {"app": "web"}
    assert claim["metadata"]["annotations"]["example.com/owner"] == "team-a"
    assert "volume.beta.kubernetes.io/storage-provisioner" not in claim["metadata"]["annotations"]
    new_pv = get(server, "pv", setup.ref.name)
    assert our_volume(new_pv) == setup.ref and new_pv["status"]["phase"] == "Bound"
    assert new_pv["spec"]["csi"]["volumeHandle"] == setup.ref.handle
    assert new_pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert new_pv["metadata"]["annotations"][MIGRATED_FROM] == setup.pv
    assert new_pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == f"robin.io/{setup.ref.kind}"
    assert new_pv["metadata"]["labels"] == {"robin.io/project": setup.project}
    old_pv = get(server, "pv", setup.pv)
    assert old_pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and old_pv["status"]["phase"] == "Released"
    assert old_pv["metadata"]["annotations"][MIGRATED_TO] == setup.ref.handle
    saved = json.loads(old_pv["metadata"]["annotations"][MIGRATED_CLAIM])
    assert saved["uid"] == setup.claim_uid and saved["labels"] == {"app": "web"}
    assert not any(key.startswith(("pv.kubernetes.io/", "volume.")) for key in saved["annotations"])
    # robin still has the volume, untouched by Kubernetes
    volume = robin_client.get_volume(setup.ref.kind, setup.project, setup.ref.name)
    assert volume["state"] == "available"
    return claim


# --- reading GlusterFS PVs ------------------------------------------------------------------------------------

def test_gluster_pvs_reads_servers_path_claim_and_project(kube_server, kube_client, gluster_claim):
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    assert gpv.servers == GLUSTER_SERVERS and (gpv.volume, gpv.subdir) == ("vol_4f1c", "data/app")
    assert (gpv.claim_namespace, gpv.claim_name, gpv.claim_uid) == (setup.namespace, setup.claim, setup.claim_uid)
    assert gpv.project == setup.project  # the namespace's robin.io/project annotation, not its name
    assert gpv.capacity_bytes == 2**30 and gpv.access_modes == ("ReadWriteMany",)
    assert gpv.volume_mode == "Filesystem" and gpv.storage_class_name == "glusterfs-heketi" and not gpv.read_only
    assert setup.pv in [p.name for p in gluster_pvs(kube_client, None)]

    refused("pv_not_found", gluster_pvs, kube_client, [unique("nope")])
    other = unique("pv-nfs")
    create(kube_server, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": other},
                         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                  "nfs": {"server": "10.0.0.5", "path": "/export"}}})
    refused("not_gluster_pv", gluster_pvs, kube_client, [other])


def test_gluster_pvs_needs_the_endpoints(kube_server, kube_client, gluster_claim):
    setup = gluster_claim()
    endpoints = get(kube_server, "endpoints", setup.endpoints, setup.namespace)
    kept = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": setup.endpoints,
                                                                   "namespace": setup.namespace}}
    # A PV's volume source cannot change once created (as on a real cluster): its Endpoints object goes instead.
    try:
        kubectl(kube_server, "delete", "endpoints", setup.endpoints, "-n", setup.namespace)
        error = refused("endpoints_not_found", gluster_pvs, kube_client, [setup.pv])
        assert setup.endpoints in error.message
        create(kube_server, {**kept, "subsets": []})
        refused("endpoints_empty", gluster_pvs, kube_client, [setup.pv])
    finally:
        # The server outlives the test (the module's, both databases' rounds): a PV left without endpoints would
        # make every later listing of all GlusterFS PVs refuse, as it should on a real cluster.
        kubectl(kube_server, "delete", "endpoints", setup.endpoints, "-n", setup.namespace, "--ignore-not-found")
        create(kube_server, {**kept, "subsets": endpoints["subsets"]})


def test_destination_name_fits_robin_names():
    assert destination_name("pvc-0a1b") == "migrated-pvc-0a1b"
    long_a, long_b = "pvc-" + "a" * 200, "pvc-" + "a" * 199 + "b"
    assert len(destination_name(long_a)) == 128 and destination_name(long_a) != destination_name(long_b)
    assert "." not in destination_name("x" * 107 + "." + "y" * 50)  # a label never ends in '.' before the hash


# --- refusals -------------------------------------------------------------------------------------------------

def test_cutover_refused_while_a_pod_uses_the_claim(kube_server, kube_client, robin_client, gluster_claim):
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    pod = start_pod(kube_server, setup.namespace, setup.claim)
    done = start_pod(kube_server, setup.namespace, setup.claim, phase="Succeeded")  # holds it until deleted
    start_pod(kube_server, setup.namespace, setup.claim, phase="Pending", node=None)  # unscheduled: holds nothing
    assert pods_using(kube_client, setup.namespace, setup.claim) == sorted([pod, done])

    error = refused("claim_in_use", cutover, kube_client, robin_client, gpv, setup.ref, setup.storage_class)
    assert pod in error.message and "scale the workload down" in error.message
    assert_untouched(kube_server, setup)
    refused("not_migrated", finalize, kube_client, setup.pv)
    assert get(kube_server, "pv", setup.pv) is not None


def test_cutover_refuses_a_destination_the_provisioner_could_not_own(kube_server, kube_client, robin_client,
                                                                     gluster_claim):
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    foreign, rbd = robin_class("example.com/nfs"), robin_class("robin.io/rbd", parameters={"pool": "rbd"})
    create(kube_server, foreign, rbd)
    for storage_class in (unique("missing"), foreign["metadata"]["name"], rbd["metadata"]["name"]):
        refused("storage_class_invalid", cutover, kube_client, robin_client, gpv, setup.ref, storage_class)
    missing = VolumeRef(setup.ref.kind, setup.project, unique("gone"))
    refused("volume_not_found", cutover, kube_client, robin_client, gpv, missing, setup.storage_class)
    elsewhere = VolumeRef(setup.ref.kind, unique("p"), setup.ref.name)
    refused("project_mismatch", cutover, kube_client, robin_client, gpv, elsewhere, setup.storage_class)
    assert_untouched(kube_server, setup)


# --- the cut-over ---------------------------------------------------------------------------------------------

def test_cutover_rebinds_the_claim_and_finalize_drops_the_old_pv(kube_server, kube_client, robin_client,
                                                                 gluster_claim):
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    pod = start_pod(kube_server, setup.namespace, setup.claim)
    refused("claim_in_use", cutover, kube_client, robin_client, gpv, setup.ref, setup.storage_class)
    kubectl(kube_server, "delete", "pod", pod, "-n", setup.namespace)  # the workload scaled down

    summary = cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert summary["changed"] and summary["steps"] == ["retained", "claim_deleted", "claim_created", "pv_created"]
    claim = assert_cut_over(kube_server, robin_client, setup)
    # The server's own record: the old PV was Retain before its claim went (else its PV controller, which deletes
    # a Released GlusterFS PV whose policy is Delete, would have deleted it).
    writes = list(kube_server.store.writes)
    retained = min(w.rv for w in writes if w.name == setup.pv and w.type == "MODIFIED"
                   and w.object["spec"]["persistentVolumeReclaimPolicy"] == "Retain")
    claim_gone = min(w.rv for w in writes if (w.resource, w.namespace, w.name, w.type) == (
        "persistentvolumeclaims", setup.namespace, setup.claim, "DELETED"))
    assert retained < claim_gone
    assert summary["claim_uid"] == claim["metadata"]["uid"] and summary["old_claim_uid"] == setup.claim_uid
    json.dumps(summary)  # the CLI prints it

    again = cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert not again["changed"] and again["steps"] == [] and again["claim_uid"] == claim["metadata"]["uid"]

    start_pod(kube_server, setup.namespace, setup.claim)  # the workload back, on Ceph: finalize does not mind
    assert finalize(kube_client, gpv, timeout=TIMEOUT)["deleted"]
    assert get(kube_server, "pv", setup.pv) is None
    assert finalize(kube_client, setup.pv)["already_gone"]
    assert get(kube_server, "pvc", setup.claim, setup.namespace)["metadata"]["uid"] == claim["metadata"]["uid"]
    assert cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class)["changed"] is False


def test_cutover_finishes_after_a_crash_once_the_claim_was_deleted(kube_server, kube_client, robin_client,
                                                                   gluster_claim):
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    # Steps a and b succeed, creating the new claim fails: the claim is gone, only the old PV remembers it.
    kube_server.faults.fail_requests(500, count=1, method="POST", path_contains="/persistentvolumeclaims")
    with pytest.raises(KubeError):
        cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert get(kube_server, "pvc", setup.claim, setup.namespace) is None
    refused("cutover_incomplete", finalize, kube_client, setup.pv)

    summary = cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert summary["steps"] == ["claim_created", "pv_created"]
    assert_cut_over(kube_server, robin_client, setup)


def test_cutover_finishes_after_a_crash_once_the_new_claim_exists(kube_server, kube_client, robin_client,
                                                                  gluster_claim):
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    kube_server.faults.fail_requests(500, count=1, method="POST", path_contains="/persistentvolumes")
    with pytest.raises(KubeError):
        cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert get(kube_server, "pvc", setup.claim, setup.namespace)["status"]["phase"] == "Pending"

    summary = cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert summary["steps"] == ["pv_created"]
    assert_cut_over(kube_server, robin_client, setup)


def test_cutover_finishes_when_the_claim_was_deleted_by_hand(kube_server, kube_client, robin_client,
                                                             gluster_claim):
    """An admin deleted the claim after step a (or a crash came between a and b's request)."""
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    kube_server.faults.fail_requests(500, count=1, method="DELETE", path_contains="/persistentvolumeclaims/")
    with pytest.raises(KubeError):
        cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert get(kube_server, "pv", setup.pv)["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    kubectl(kube_server, "delete", "pvc", setup.claim, "-n", setup.namespace, f"--timeout={TIMEOUT}s")

    cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert_cut_over(kube_server, robin_client, setup)


def test_robins_provisioner_owns_the_new_pv(kube_server, kube_client, robin_client, robin_url, admin_token,
                                           gluster_claim, fs):
    """With the provisioner running through the cut-over: it leaves the new claim alone, then expands it."""
    setup = gluster_claim()
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    provisioner = ProvisionerProcess(kube_server.kubeconfig_path, robin_url, admin_token, unique("prov"))
    try:
        provisioner.wait_serving()
        cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
        assert_cut_over(kube_server, robin_client, setup)
        kubectl(kube_server, "patch", "pvc", setup.claim, "-n", setup.namespace,
                "-p", json.dumps({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}))
        kubectl(kube_server, "wait", "-n", setup.namespace, f"pvc/{setup.claim}", f"--timeout={TIMEOUT}s",
                "--for=jsonpath={.status.capacity.storage}=2Gi")
    finally:
        provisioner.stop()
        print(f"--- provisioner log ---\n{provisioner.log()[-4000:]}")
    volume = robin_client.get_volume("cephfs", setup.project, setup.ref.name)
    assert volume["quota_bytes"] == 2 * GiB and int(fs.getxattr(volume["path"], "ceph.quota.max_bytes")) == 2 * GiB
    assert get(kube_server, "pv", setup.ref.name)["spec"]["capacity"]["storage"] == "2Gi"


def test_claim_takeover_cutover_carries_no_robin_annotation_and_binds_no_volume_made_for_another(
        kube_server, kube_client, robin_client, gluster_claim, rbd_ioctx):
    """The tenant wrote robin's volume annotation, naming another project's volume, on its GlusterFS claim: the
    claim the cut-over makes must not carry it (robin's provisioner would read it as its own record). And a
    destination robin made for a claim is that claim's, never the migrated one's."""
    finance, victim = unique("finance"), f"pvc-{unique('uid')}"
    robin_client.create_project(finance, {"max_bytes": 10 * GiB, "max_volumes": 10, "max_snapshots": 10})
    robin_client.create_volume("rbd", finance, victim, GiB, created_for=f"k8s-claim:{unique('uid')}")
    try:
        with rbd.Image(rbd_ioctx, victim) as image:
            image.write(b"finance ledger, 2026", 0)
        before = robin_client.get_volume("rbd", finance, victim)
        setup = gluster_claim()
        kubectl(kube_server, "annotate", "pvc", setup.claim, "-n", setup.namespace,
                f"robin.io/volume=rbd:{finance}:{victim}")
        [gpv] = gluster_pvs(kube_client, [setup.pv])
        claims_volume = VolumeRef(setup.ref.kind, setup.project, f"pvc-{unique('uid')}")
        robin_client.create_volume(claims_volume.kind, setup.project, claims_volume.name, GiB,
                                   created_for=f"k8s-claim:{unique('uid')}")
        error = refused("volume_taken", cutover, kube_client, robin_client, gpv, claims_volume, setup.storage_class)
        assert "made for k8s-claim:" in error.message
        assert get(kube_server, "pvc", setup.claim, setup.namespace)["metadata"]["uid"] == setup.claim_uid

        cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
        claim = assert_cut_over(kube_server, robin_client, setup)
        assert "robin.io/volume" not in claim["metadata"]["annotations"]
        saved = json.loads(get(kube_server, "pv", setup.pv)["metadata"]["annotations"][MIGRATED_CLAIM])
        assert "robin.io/volume" not in saved["annotations"]
        assert robin_client.get_volume("rbd", finance, victim) == before
        with rbd.Image(rbd_ioctx, victim, read_only=True) as image:
            assert image.size() == GiB and image.read(0, 20) == b"finance ledger, 2026"
    finally:
        robin_client.delete_volume("rbd", finance, victim)


def test_cutover_to_an_rbd_image(kube_server, kube_client, robin_client, gluster_claim):
    setup = gluster_claim(kind="rbd", modes=("ReadWriteOnce",))
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    cutover(kube_client, robin_client, gpv, setup.ref, setup.storage_class, timeout=TIMEOUT)
    assert_cut_over(kube_server, robin_client, setup)
    pv = get(kube_server, "pv", setup.ref.name)
    assert pv["spec"]["csi"]["fsType"] == "ext4" and pv["spec"]["csi"]["volumeAttributes"]["imageName"] == \
        setup.ref.name


def test_cutover_refuses_a_shared_claim_on_an_rbd_file_system(kube_server, kube_client, robin_client, gluster_claim):
    setup = gluster_claim(kind="rbd", modes=("ReadWriteMany",))
    [gpv] = gluster_pvs(kube_client, [setup.pv])
    error = refused("claim_invalid", cutover, kube_client, robin_client, gpv, setup.ref, setup.storage_class)
    assert "CephFS" in error.message
    assert_untouched(kube_server, setup)
