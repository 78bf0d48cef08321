"""`robin migrate gluster --pv` end to end: a GlusterFS PV (heketi's way: an Endpoints object naming the servers,
`glusterfs.path` the volume) bound to a claim in the test Kubernetes API server, its data in a real GlusterFS
volume; the command copies it into a CephFS volume of the claim's namespace's project, refuses the cut-over while
a pod uses the claim, then rebinds the claim, and finalizes."""
from __future__ import annotations

from pathlib import Path

import pytest

from robin.migrate.cutover import MIGRATED_TO
from tests.conftest import unique
from tests.migrate.conftest_k8s import (
    GiB,
    get,
    kube_server,
    robin_class,
    robin_client,
    wait_bound,
)
from tests.migrate.test_cutover import start_pod
from tests.support import trees
from tests.support.kube import KUBECTL, create, kubectl
from tests.support.mounts import ceph_fuse

pytestmark = [pytest.mark.integration, pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")]
__all__ = ["kube_server", "robin_client"]  # fixtures, used by name


@pytest.fixture()
def gluster_pv(gluster, kube_server, robin_client):
    """A GlusterFS volume with the tree in directory app/, and a PV of that directory bound to a claim in a
    namespace mapped to a fresh robin project."""
    volume = gluster.create_volume(unique("gk").replace("-", "_"))
    with gluster.mount(volume) as root:
        (Path(root) / "app").mkdir()
        trees.build(Path(root) / "app", small_files=20)
    namespace, project, pv, claim, endpoints = unique("ns"), unique("p"), unique("pvc-gl"), "data", unique("ep")
    robin_client.create_project(project, {"max_bytes": 10 * GiB, "max_volumes": 10, "max_snapshots": 10})
    create(kube_server, {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": namespace, "annotations": {"robin.io/project": project}}})
    create(kube_server,
           {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": endpoints, "namespace": namespace},
            "subsets": [{"addresses": [{"ip": gluster.host}], "ports": [{"port": 1}]}]},
           {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "glusterfs",
                     "glusterfs": {"endpoints": endpoints, "path": f"{volume}/app"},
                     "claimRef": {"namespace": namespace, "name": claim}}},
           {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
            "spec": {"storageClassName": "glusterfs", "accessModes": ["ReadWriteMany"], "volumeName": pv,
                     "resources": {"requests": {"storage": "2Gi"}}}})
    wait_bound(kube_server, namespace, claim)
    yield {"volume": volume, "namespace": namespace, "project": project, "pv": pv, "claim": claim}
    gluster.delete_volume(volume)


@pytest.fixture()
def migrate_pvs(migrate, kube_server):
    """migrate_pvs(*args) -> (exit status, output): the command on the test API server's PVs."""

    def run(*args: str) -> tuple[int, dict]:
        status, output, stderr = migrate("--kubeconfig", kube_server.kubeconfig_path, *args)
        assert status in (0, 1, 2), stderr
        return status, output

    return run


def test_pv_is_copied_then_its_claim_cut_over_then_finalized(gluster, gluster_pv, kube_server, robin_client,
                                                              ceph_conf, migrate_pvs):
    migrate = migrate_pvs
    klass = robin_class("robin.io/cephfs")
    create(kube_server, klass)
    namespace, pv, claim = gluster_pv["namespace"], gluster_pv["pv"], gluster_pv["claim"]
    cut_over = ("--pv", pv, "--cutover", "--storage-class", klass["metadata"]["name"])

    pod = start_pod(kube_server, namespace, claim)
    status, output = migrate(*cut_over)
    assert status == 2 and output["plan"][0]["refusal"]["code"] == "claim_in_use"
    assert pod in output["plan"][0]["refusal"]["message"]
    assert robin_client.list_volumes("cephfs", gluster_pv["project"])["items"] == []  # nothing made
    kubectl(kube_server, "delete", "pod", pod, "-n", namespace)

    old_uid = get(kube_server, "pvc", claim, namespace)["metadata"]["uid"]
    status, output = migrate(*cut_over)
    assert status == 0, output
    (item,) = output["plan"]
    assert (item["project"], item["name"], item["capacity_bytes"]) == (gluster_pv["project"], f"migrated-{pv}",
                                                                      2 * GiB)
    assert item["size_bytes"] == 2 * GiB  # the PV's capacity: more than the data needs
    (report,) = output["reports"]
    assert report["status"] == "cut-over" and report["mismatches"] == 0
    claim_now = get(kube_server, "pvc", claim, namespace)
    assert claim_now["metadata"]["uid"] != old_uid and claim_now["status"]["phase"] == "Bound"
    assert claim_now["spec"]["volumeName"] == f"migrated-{pv}"
    new_pv = get(kube_server, "pv", f"migrated-{pv}")
    assert new_pv["spec"]["csi"]["volumeHandle"] == report["destination"]["handle"]
    old_pv = get(kube_server, "pv", pv)
    assert old_pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and old_pv["status"]["phase"] == "Released"
    assert old_pv["metadata"]["annotations"][MIGRATED_TO] == report["destination"]["handle"]

    volume = robin_client.get_volume("cephfs", gluster_pv["project"], f"migrated-{pv}")
    with gluster.mount(gluster_pv["volume"], readonly=True) as root:
        expected = trees.snapshot(Path(root) / "app")
    with ceph_fuse(ceph_conf, volume["path"]) as mounted:
        assert trees.snapshot(Path(mounted)) == expected

    status, output = migrate("--pv", pv, "--finalize")
    assert status == 0 and output["finalize"][0]["deleted"]
    assert get(kube_server, "pv", pv) is None
    statuses = [r["status"] for r in robin_client.migration_records(gluster_pv["project"], "cephfs",
                                                                     f"migrated-{pv}")]
    assert statuses == ["started", "verified", "cut-over", "finalized"]
    with gluster.mount(gluster_pv["volume"], readonly=True) as root:  # Retain: the GlusterFS data is untouched
        assert trees.snapshot(Path(root) / "app") == expected


def test_finalize_before_the_cut_over_is_refused(gluster_pv, kube_server, migrate_pvs):
    status, output = migrate_pvs("--pv", gluster_pv["pv"], "--finalize")
    assert status == 1 and output["finalize"][0]["error"]["code"] == "not_migrated"
    assert get(kube_server, "pv", gluster_pv["pv"]) is not None
