"""Fixtures and helpers for the Kubernetes side of the migration: the test API server, robin's `Kube` and
`RobinClient` on it and on the session's robin (gunicorn), kubectl, and a GlusterFS PV bound to a claim as heketi
leaves them. Test modules import what they use by name (tests/migrate/conftest.py is the GlusterFS harness's)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from robin.client import ClientConfig, RobinClient, VolumeRef
from robin.kube.client import Kube, load_api_client
from robin.migrate.kubernetes import destination_name
from tests.conftest import unique
from tests.kube_apiserver import KubeApiServer
from tests.support.kube import create, kubectl

WAIT_S = 60
GiB = 2**30
GLUSTER_SERVERS = ("10.0.0.11", "10.0.0.12")


@pytest.fixture(scope="module")
def kube_server():
    with KubeApiServer.running() as server:
        yield server


@pytest.fixture(scope="module")
def kube_client(kube_server):
    kube = Kube(load_api_client(kube_server.kubeconfig_path, 4), qps=1000, burst=1000)
    yield kube
    kube.close()


@pytest.fixture(scope="module")
def robin_client(robin_url, admin_token):
    client = RobinClient(ClientConfig(url=robin_url, token=admin_token))
    yield client
    client.close()


def get(server, kind: str, name: str, namespace: str | None = None) -> dict | None:
    """The object as kubectl shows it, None when it does not exist."""
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"] + (["-n", namespace] if namespace else [])
    out = kubectl(server, *args)
    return json.loads(out) if out.strip() else None


def wait_bound(server, namespace: str, name: str) -> None:
    kubectl(server, "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Bound", f"--timeout={WAIT_S}s",
            f"pvc/{name}")


def robin_class(provisioner: str = "robin.io/cephfs", **fields) -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": unique("sc")},
            "provisioner": provisioner, "reclaimPolicy": "Retain", "allowVolumeExpansion": True, **fields}


@dataclass(frozen=True)
class GlusterSetup:
    namespace: str
    pv: str
    claim: str
    claim_uid: str
    project: str
    endpoints: str
    storage_class: str  # a robin class of the destination's kind
    ref: VolumeRef  # the destination robin volume, made through the API


def gluster_objects(namespace: str, pv: str, claim: str, endpoints: str, modes: list[str]) -> list[dict]:
    """An Endpoints object, a GlusterFS PV and its claim, pre-bound both ways, as heketi's provisioner makes them
    (reclaim policy Delete: the cut-over must never let Kubernetes delete the GlusterFS volume)."""
    return [
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": endpoints, "namespace": namespace},
         "subsets": [{"addresses": [{"ip": ip} for ip in GLUSTER_SERVERS], "ports": [{"port": 1}]}]},
        {"apiVersion": "v1", "kind": "PersistentVolume",
         "metadata": {"name": pv, "annotations": {"pv.kubernetes.io/provisioned-by": "kubernetes.io/glusterfs",
                                                  "gluster.kubernetes.io/heketi-volume-id": "4f1c"}},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": modes, "persistentVolumeReclaimPolicy": "Delete",
                  "storageClassName": "glusterfs-heketi",
                  "glusterfs": {"endpoints": endpoints, "path": "vol_4f1c/data/app"},
                  "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace,
                               "name": claim}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": claim, "namespace": namespace, "labels": {"app": "web"},
                      "annotations": {"example.com/owner": "team-a",
                                      "volume.beta.kubernetes.io/storage-provisioner": "kubernetes.io/glusterfs"}},
         "spec": {"storageClassName": "glusterfs-heketi", "accessModes": modes, "volumeName": pv,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]


@pytest.fixture
def gluster_claim(kube_server, robin_client):
    """make(kind="cephfs", modes=[...]) -> GlusterSetup: a namespace mapped to a fresh robin project, a bound
    GlusterFS claim in it, a robin class of `kind` and the destination volume `migrated-<pv>` of that kind."""

    def make(kind: str = "cephfs", modes: tuple[str, ...] = ("ReadWriteMany",)) -> GlusterSetup:
        namespace, project = unique("ns"), unique("p")
        pv, claim, endpoints = unique("pvc-gl"), unique("data"), unique("glusterfs-dynamic")
        klass = robin_class(f"robin.io/{kind}", parameters={"pool": "rbd"} if kind == "rbd" else {})
        create(kube_server, {"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": namespace, "annotations": {"robin.io/project": project}}})
        create(kube_server, klass, *gluster_objects(namespace, pv, claim, endpoints, list(modes)))
        wait_bound(kube_server, namespace, claim)
        robin_client.create_project(project, {"max_bytes": 10 * GiB, "max_volumes": 10, "max_snapshots": 10})
        ref = VolumeRef(kind, project, destination_name(pv))
        robin_client.create_volume(kind, project, ref.name, GiB)
        uid = get(kube_server, "pvc", claim, namespace)["metadata"]["uid"]
        return GlusterSetup(namespace, pv, claim, uid, project, endpoints, klass["metadata"]["name"], ref)

    return make
