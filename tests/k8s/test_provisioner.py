"""`robin provisioner` end to end: the real kubectl against the test Kubernetes API server, robin's API
(gunicorn) on the session's database, the real Ceph dev cluster; every volume is checked in Ceph and in
robin's database. The provisioner runs as a subprocess, killed on purpose where a test says so."""
from __future__ import annotations

import collections
import functools
import json
import random
import re

import pytest
import rbd
from sqlalchemy import select

from robin.client import COLLECTIONS
from robin.kube.volumes import VOLUME_ANNOTATION
from robin.volumes.models import CephfsPath, RbdImage
from tests.conftest import unique
from tests.helm.chart import NAMESPACE as RELEASE_NAMESPACE
from tests.helm.chart import manifests, pod_spec
from tests.kube_apiserver import KubeApiServer
from tests.kube_apiserver.resources import DEFAULT_VERSION, EVENTS, LEASES, PVCS, PVS
from tests.support.kube import KUBECTL, create, kubectl
from tests.support.net import eventually as _eventually
from tests.support.provisioner import ProvisionerProcess

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")]
MiB, GiB = 2**20, 2**30
WAIT_S = 60
eventually = functools.partial(_eventually, timeout=WAIT_S)




# --- services ---------------------------------------------------------------------------------------------------

@pytest.fixture
def kube():
    # Pages shorter than the informers ask for: they must follow `continue`, as against a real server.
    with KubeApiServer.running(bookmark_interval=0.5, history_size=5000, page_limit=2) as server:
        yield server


@pytest.fixture(scope="module")
def chart_rbac() -> tuple[str, list[dict]]:
    """The provisioner's ServiceAccount and RBAC objects as the Helm chart ships them (default values)."""
    objects = manifests({})
    deployment = next(o for o in objects if o["kind"] == "Deployment"
                      and o["metadata"]["labels"]["app.kubernetes.io/component"] == "provisioner")
    return pod_spec(deployment)["serviceAccountName"], [
        o for o in objects if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                            "RoleBinding")
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "provisioner"]


@pytest.fixture
def kubernetes_1_30(kube):
    """The API server reports 1.30, the last Kubernetes with the in-tree rbd and cephfs volume sources."""
    kube.version = "1.30.6"
    yield kube
    kube.version = DEFAULT_VERSION


@pytest.fixture
def provisioner_kubeconfig(kube, chart_rbac, tmp_path) -> str:
    """A kubeconfig with the token of the chart's provisioner ServiceAccount, in the release's namespace, after
    its RBAC: the provisioner may do what the chart grants it, nothing more (a call it is not granted fails)."""
    account, objects = chart_rbac
    create(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}}, *objects)
    token = kube.service_account_token(RELEASE_NAMESPACE, account)
    return kube.write_kubeconfig(str(tmp_path / "provisioner-kubeconfig"), token=token)


@pytest.fixture
def provisioners(kube, provisioner_kubeconfig, robin_url, admin_token, robin_api, request):
    """start(identity=..., env=...) -> a running ProvisionerProcess; all are stopped afterwards (their logs are
    printed when the test failed), then the volumes the test's claims made are deleted."""
    started: list[ProvisionerProcess] = []
    before = {_key(volume) for volume in _live_volumes(robin_api)}

    def start(identity: str | None = None, env: dict | None = None) -> ProvisionerProcess:
        # In the release's namespace (POD_NAMESPACE), where the chart's Role lets it hold its Lease.
        process = ProvisionerProcess(provisioner_kubeconfig, robin_url, admin_token, identity or unique("prov"),
                                     {"POD_NAMESPACE": RELEASE_NAMESPACE, **(env or {})})
        started.append(process)
        return process.wait_serving()

    yield start
    for process in started:
        process.stop()
        print(f"--- provisioner {process.identity} log ---\n{process.log()[-4000:]}")
    _delete_volumes_made_since(robin_api, before)


def _key(volume: dict) -> tuple[str, str, str]:
    return volume["kind"], volume["project"], volume["name"]


def _live_volumes(robin_api) -> list[dict]:
    """Every live volume robin holds, of every project, page after page."""
    volumes, params = [], {"limit": 1000}
    while True:
        response = robin_api("GET", "/api/v2/volumes", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        volumes += page["items"]
        if not page.get("next_cursor"):
            return volumes
        params = {"limit": 1000, "cursor": page["next_cursor"]}


def _delete_volumes_made_since(robin_api, before: set[tuple[str, str, str]]) -> None:
    """A claim's volume outlives the test's API server (which forgets its claims and PVs): delete, and purge, what
    the test made, so that a later test listing every volume (the CSI plugin's ListVolumes) finds only its own.
    Newest first, so that clones go before their parents."""
    made = [volume for volume in _live_volumes(robin_api) if _key(volume) not in before]
    for volume in sorted(made, key=lambda volume: volume["created_at"], reverse=True):
        kind, project, name = _key(volume)
        response = robin_api("DELETE", f"/api/v2/projects/{project}/{COLLECTIONS[kind][0]}/{name}",
                             params={"with_snapshots": "true", "purge": "true"})
        assert response.status_code in (204, 404), response.text


# --- Kubernetes helpers -----------------------------------------------------------------------------------------

def namespace(kube, annotations: dict | None = None) -> str:
    name = unique("ns")
    create(kube, {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": name, "annotations": annotations or {}}})
    return name


def storage_class(provisioner: str = "robin.io/rbd", parameters: dict | None = None, **fields) -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": unique("sc")},
            "provisioner": provisioner, "parameters": parameters or {}, **fields}


def claim(ns: str, klass: dict, size: str = "1Gi", modes=("ReadWriteOnce",), **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": unique("pvc"), "namespace": ns},
            "spec": {"storageClassName": klass["metadata"]["name"], "accessModes": list(modes),
                     "resources": {"requests": {"storage": size}}, **spec}}


def bound_claim(kube, klass: dict, **claim_args) -> tuple[str, dict]:
    """A new namespace with the class and a claim of it, once Bound: (namespace, the claim as it is then)."""
    ns = namespace(kube)
    pvc = claim(ns, klass, **claim_args)
    create(kube, klass, pvc)
    wait_bound(kube, ns, pvc["metadata"]["name"])
    return ns, get_claim(kube, ns, pvc["metadata"]["name"])


def wait_bound(kube, ns: str, *names: str) -> None:
    kubectl(kube, "wait", "-n", ns, "--for=jsonpath={.status.phase}=Bound", f"--timeout={WAIT_S}s",
            *[f"pvc/{name}" for name in names])


def get_claim(kube, ns: str, name: str) -> dict:
    return json.loads(kubectl(kube, "get", "-n", ns, "pvc", name, "-o", "json"))


def volume_of(kube, pvc: dict) -> dict:
    return json.loads(kubectl(kube, "get", "pv", pvc["spec"]["volumeName"], "-o", "json"))


def stored(kube, rt, ns: str, name: str) -> dict | None:
    """Straight from the test server's store (bypasses HTTP, so it works while faults are injected)."""
    return kube.store.objects[rt.key].get((ns, name))


def events(kube, ns: str, name: str) -> list[tuple[str, str, str, int]]:
    return [(e["type"], e["reason"], e["message"], e.get("count", 1)) for e in kube.store.objects[EVENTS.key].values()
            if e["involvedObject"].get("name") == name and e["involvedObject"].get("namespace") == ns]


def rbd_size(rbd_ioctx, name: str) -> int | None:
    try:
        with rbd.Image(rbd_ioctx, name, read_only=True) as image:
            return image.size()
    except rbd.ImageNotFound:
        return None


def in_rbd_trash(rbd_ioctx, name: str) -> bool:
    return any(entry["name"] == name for entry in rbd.RBD().trash_list(rbd_ioctx))


# --- provisioning -----------------------------------------------------------------------------------------------

def test_rbd_claim_becomes_a_bound_pv_over_a_real_image(kube, provisioners, db_rows, rbd_ioctx):
    process = provisioners(env={"ROBIN_PROVISIONER_IMAGE_METADATA": "true"})
    ns = namespace(kube)
    klass = storage_class(parameters={"pool": "rbd"}, mountOptions=["discard"], reclaimPolicy="Delete")
    pvc = claim(ns, klass, size="1.5Gi")
    create(kube, klass, pvc)
    wait_bound(kube, ns, pvc["metadata"]["name"])

    pvc = get_claim(kube, ns, pvc["metadata"]["name"])
    pv = volume_of(kube, pvc)
    name = f"pvc-{pvc['metadata']['uid']}"
    assert pv["metadata"]["name"] == name and pv["status"]["phase"] == "Bound"
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "robin.io/rbd"
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" and pv["spec"]["mountOptions"] == ["discard"]
    assert pv["spec"]["accessModes"] == ["ReadWriteOnce"] and pv["spec"]["capacity"]["storage"] == "1536Mi"
    assert pv["spec"]["csi"]["driver"] == "csi.robin.io"
    assert pv["spec"]["csi"]["volumeHandle"] == f"rbd:{ns}:{name}"
    assert pv["spec"]["csi"]["volumeAttributes"]["imageName"] == name
    assert "robin.io/provisioning" not in pvc["metadata"].get("finalizers", [])
    # Ceph has the image at the size the PV claims, with the claim recorded in its metadata
    assert rbd_size(rbd_ioctx, name) == 1536 * MiB
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.metadata_get("csi.storage.k8s.io/pvc/name") == pvc["metadata"]["name"]
    # robin's database: one available image in the project named after the namespace
    [row] = db_rows(select(RbdImage).where(RbdImage.name == name))
    assert row.project.name == ns and row.state.value == "available" and row.size_bytes == 1536 * MiB
    assert ("Normal", "ProvisioningSucceeded") in [e[:2] for e in events(kube, ns, pvc["metadata"]["name"])]
    samples = process.metrics()
    assert samples['robin_provisioner_provisioning_duration_seconds_count{type="rbd"}'] == 1
    assert [samples[f'robin_provisioner_step_duration_seconds_count{{step="{step}"}}'] for step in
            ("hold", "volume", "pv")] == [1, 1, 1]
    assert samples["robin_provisioner_leader"] == 1 and "robin_provisioner_queue_depth" in samples


def test_cephfs_claim_with_in_tree_source_as_wayne_reads_it(kubernetes_1_30, kube, provisioners, db_rows, fs,
                                                            robin_api):
    provisioners()
    ns = namespace(kube)
    klass = storage_class("robin.io/cephfs", {"volumeSource": "in-tree", "userSecretName": "ceph-client",
                                              "userId": "kube"}, reclaimPolicy="Retain")
    pvc = claim(ns, klass, size="300Mi", modes=("ReadWriteMany",))
    create(kube, klass, pvc)
    wait_bound(kube, ns, pvc["metadata"]["name"])

    pv = volume_of(kube, get_claim(kube, ns, pvc["metadata"]["name"]))
    source = pv["spec"]["cephfs"]
    name = source["path"].rsplit("/", 1)[1]  # how Wayne finds the volume
    assert name == pv["metadata"]["name"] and source["path"] == f"/robin/{ns}/{name}"
    assert source["user"] == "kube" and source["secretRef"] == {"name": "ceph-client", "namespace": ns}
    cluster = robin_api("GET", "/api/v2/clusters/default").json()
    assert source["monitors"] == cluster["monitors"] and source["monitors"]
    assert int(fs.getxattr(source["path"], "ceph.quota.max_bytes")) == 300 * MiB
    [row] = db_rows(select(CephfsPath).where(CephfsPath.name == name))
    assert row.project.name == ns and row.size_bytes == 300 * MiB


def test_rbd_in_tree_source(kubernetes_1_30, kube, provisioners, rbd_ioctx):
    provisioners()
    ns = namespace(kube)
    klass = storage_class(parameters={"volumeSource": "in-tree", "userSecretName": "ceph-secret",
                                      "userSecretNamespace": "kube-system", "fsType": "xfs", "userId": "kube"})
    pvc = claim(ns, klass)
    create(kube, klass, pvc)
    wait_bound(kube, ns, pvc["metadata"]["name"])
    pv = volume_of(kube, get_claim(kube, ns, pvc["metadata"]["name"]))
    assert pv["spec"]["rbd"]["image"] == pv["metadata"]["name"] and pv["spec"]["rbd"]["pool"] == "rbd"
    assert pv["spec"]["rbd"]["fsType"] == "xfs" and pv["spec"]["rbd"]["monitors"]
    assert pv["spec"]["rbd"]["secretRef"] == {"name": "ceph-secret", "namespace": "kube-system"}
    assert pv["spec"]["rbd"]["user"] == "kube"
    assert "csi" not in pv["spec"]
    with rbd.Image(rbd_ioctx, pv["metadata"]["name"], read_only=True) as image:  # not asked for: not written
        assert not [key for key, _ in image.metadata_list() if key.startswith("csi.storage.k8s.io/")]


@pytest.mark.parametrize("version", ["1.31.0", "1.34.1"])
def test_in_tree_classes_are_refused_where_kubernetes_has_no_in_tree_sources(kube, provisioners, robin_api, version):
    kube.version = version
    try:
        provisioners()
        ns = namespace(kube)
        klass = storage_class("robin.io/cephfs", {"volumeSource": "in-tree", "userSecretName": "ceph-client",
                                                  "userId": "kube"})
        pvc = claim(ns, klass, modes=("ReadWriteMany",))
        create(kube, klass, pvc)
        name = pvc["metadata"]["name"]
        failed = eventually(lambda: [e for e in events(kube, ns, name) if e[1] == "ProvisioningFailed"],
                            what="a ProvisioningFailed event")
        minor = version.split(".")[1]
        assert failed[0][0] == "Warning" and f"Kubernetes removed in 1.31, and this cluster runs 1.{minor}" in \
            failed[0][2] and "volumeSource csi" in failed[0][2]
        claim_now = stored(kube, PVCS, ns, name)
        assert claim_now["status"]["phase"] == "Pending"
        assert "robin.io/provisioning" not in claim_now["metadata"].get("finalizers", [])
        assert not [pv for pv in kube.store.objects[PVS.key].values()
                    if (pv["spec"].get("claimRef") or {}).get("namespace") == ns]
        assert robin_api("GET", f"/api/v2/projects/{ns}").status_code == 404  # refused before anything was made

        csi_class = storage_class("robin.io/cephfs")  # volumeSource csi: what works on this Kubernetes
        create(kube, csi_class)
        other = claim(ns, csi_class, modes=("ReadWriteMany",))
        create(kube, other)
        wait_bound(kube, ns, other["metadata"]["name"])
        assert "csi" in volume_of(kube, get_claim(kube, ns, other["metadata"]["name"]))["spec"]
    finally:
        kube.version = DEFAULT_VERSION


def test_namespace_annotation_names_the_project_and_the_class_sets_its_quota(kube, provisioners, robin_api):
    provisioners()
    project = unique("team")
    ns = namespace(kube, {"robin.io/project": project})
    klass = storage_class(parameters={"projectQuotaBytes": "20Gi", "projectQuotaVolumes": "7",
                                      "projectQuotaSnapshots": "3"})
    pvc = claim(ns, klass)
    create(kube, klass, pvc)
    wait_bound(kube, ns, pvc["metadata"]["name"])
    created = robin_api("GET", f"/api/v2/projects/{project}").json()
    assert created["quota"] == {"max_bytes": 20 * GiB, "max_volumes": 7, "max_snapshots": 3}
    uid = get_claim(kube, ns, pvc["metadata"]["name"])["metadata"]["uid"]
    assert robin_api("GET", f"/api/v2/projects/{project}/rbd-images/pvc-{uid}").status_code == 200
    assert robin_api("GET", f"/api/v2/projects/{ns}").status_code == 404


def test_quota_refusal_is_a_warning_event_and_retried_until_quota_allows(kube, provisioners, robin_api):
    provisioners()
    ns = namespace(kube)
    assert robin_api("POST", "/api/v2/projects", json={"name": ns, "quota": {
        "max_bytes": GiB, "max_volumes": 10, "max_snapshots": 10}}).status_code == 201
    klass = storage_class()
    pvc = claim(ns, klass, size="2Gi")
    create(kube, klass, pvc)
    name = pvc["metadata"]["name"]
    failed = eventually(lambda: [e for e in events(kube, ns, name) if e[1] == "ProvisioningFailed"],
                        what="a ProvisioningFailed event")
    assert failed[0][0] == "Warning" and "quota" in failed[0][2] and "2147483648 were requested" in failed[0][2]
    assert stored(kube, PVCS, ns, name)["status"]["phase"] == "Pending"
    eventually(lambda: max(e[3] for e in events(kube, ns, name) if e[1] == "ProvisioningFailed") >= 2,
               what="the retry (the event's count grows)")
    assert robin_api("GET", f"/api/v2/projects/{ns}/rbd-images").json()["items"] == []

    assert robin_api("PATCH", f"/api/v2/projects/{ns}", json={"quota": {"max_bytes": 4 * GiB}}).status_code == 200
    wait_bound(kube, ns, name)


@pytest.mark.parametrize("klass, pvc_spec, message", [
    (storage_class(), {"accessModes": ["ReadWriteMany"]}, "ReadWriteMany on an RBD image needs volumeMode Block"),
    (storage_class("robin.io/cephfs"), {"volumeMode": "Block"}, "volumeMode Block needs an RBD class"),
    (storage_class(parameters={"poool": "rbd"}), {}, "parameters robin.io/rbd does not know: poool"),
    (storage_class(parameters={"pool": "not-a-robin-pool"}), {}, "pool"),
], ids=["rwx-on-rbd-filesystem", "block-on-cephfs", "unknown-parameter", "pool-refused-by-robin"])
def test_claims_robin_cannot_serve_get_an_event_and_leave_nothing(kube, provisioners, robin_api, klass, pvc_spec,
                                                                 message):
    provisioners()
    ns = namespace(kube)
    klass = {**klass, "metadata": {"name": unique("sc")}}
    pvc = claim(ns, klass)
    pvc["spec"].update(pvc_spec)
    create(kube, klass, pvc)
    name = pvc["metadata"]["name"]
    failed = eventually(lambda: [e for e in events(kube, ns, name) if e[1] == "ProvisioningFailed"],
                        what="a ProvisioningFailed event")
    assert message in failed[0][2]
    assert stored(kube, PVCS, ns, name)["status"]["phase"] == "Pending"
    assert not kube.store.objects[PVS.key]
    project = robin_api("GET", f"/api/v2/projects/{ns}")
    if project.status_code == 200:  # only a refusal by robin itself comes after the project was made
        assert robin_api("GET", f"/api/v2/projects/{ns}/rbd-images").json()["items"] == []


# --- claims naming what is not theirs ---------------------------------------------------------------------------

def victim_volume(kube, rbd_ioctx) -> tuple[str, dict]:
    """Another team's bound claim, its image holding data: (its volume handle, its claim)."""
    ns, pvc = bound_claim(kube, storage_class(reclaimPolicy="Delete"))
    with rbd.Image(rbd_ioctx, pvc["spec"]["volumeName"]) as image:
        image.write(b"finance ledger, 2026", 0)
    return f"rbd:{ns}:{pvc['spec']['volumeName']}", pvc


def victim_state(rbd_ioctx, db_rows, name: str) -> tuple:
    """Everything of the victim's volume an attack could change: in Ceph and in robin's database."""
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        in_ceph = (image.size(), image.read(0, 20), sorted(image.metadata_list()))
    [row] = db_rows(select(RbdImage).where(RbdImage.name == name))
    return in_ceph, (row.state.value, row.size_bytes, row.updated_at, row.deleted_at, row.project.name)


def claiming(ns: str, klass: dict, handle: str, **spec) -> dict:
    """A claim written as an attacker writes it: robin's volume annotation and provisioning finalizer on it."""
    body = claim(ns, klass, **spec)
    body["metadata"].update(annotations={"robin.io/volume": handle}, finalizers=["robin.io/provisioning"])
    return body


def test_claim_takeover_deleting_a_claim_that_names_anothers_volume_deletes_nothing_of_theirs(
        kube, provisioners, rbd_ioctx, db_rows):
    provisioners()
    handle, victim = victim_volume(kube, rbd_ioctx)
    before = victim_state(rbd_ioctx, db_rows, victim["spec"]["volumeName"])
    evil = namespace(kube)
    # Of a class robin does not serve: the provisioner's only business with it is its finalizer.
    attack = claiming(evil, {"metadata": {"name": unique("manual")}}, handle)
    create(kube, attack)
    kubectl(kube, "delete", "-n", evil, "pvc", attack["metadata"]["name"], f"--timeout={WAIT_S}s")

    assert victim_state(rbd_ioctx, db_rows, victim["spec"]["volumeName"]) == before
    assert not in_rbd_trash(rbd_ioctx, victim["spec"]["volumeName"])
    [warning] = [e for e in events(kube, evil, attack["metadata"]["name"]) if e[1] == "VolumeAnnotationIgnored"]
    assert warning[0] == "Warning" and handle in warning[2] and "nothing was deleted" in warning[2]
    assert volume_of(kube, get_claim(kube, victim["metadata"]["namespace"], victim["metadata"]["name"]))[
        "status"]["phase"] == "Bound"


def test_claim_takeover_annotations_naming_anothers_volume_or_project_are_ignored(
        kube, provisioners, robin_api, rbd_ioctx, db_rows):
    process = provisioners()
    handle, victim = victim_volume(kube, rbd_ioctx)
    finance = victim["metadata"]["namespace"]
    before = victim_state(rbd_ioctx, db_rows, victim["spec"]["volumeName"])
    process.stop()  # the attacker's claims exist, with their uids, before a provisioner looks at them
    evil = namespace(kube)
    klass = storage_class(reclaimPolicy="Delete")
    takeover = claiming(evil, klass, handle)
    # A claim of evil's naming the victim's bound claim as its data source: the victim's PV is not its own.
    pointing = claim(evil, klass, volumeName=victim["spec"]["volumeName"])
    clone = claiming(evil, klass, f"rbd:{finance}:{unique('copy')}",
                     dataSource={"kind": "PersistentVolumeClaim", "name": pointing["metadata"]["name"]})
    create(kube, klass, takeover, pointing, clone)
    own_name = claim(evil, klass)
    create(kube, own_name)
    uid = get_claim(kube, evil, own_name["metadata"]["name"])["metadata"]["uid"]
    kubectl(kube, "annotate", "-n", evil, "pvc", own_name["metadata"]["name"],
            f"robin.io/volume=rbd:{finance}:pvc-{uid}")
    process = provisioners()

    wait_bound(kube, evil, takeover["metadata"]["name"], own_name["metadata"]["name"])
    for body in (takeover, own_name):
        pvc = get_claim(kube, evil, body["metadata"]["name"])
        own = f"pvc-{pvc['metadata']['uid']}"
        assert pvc["spec"]["volumeName"] == own and volume_of(kube, pvc)["spec"]["csi"]["volumeHandle"] == \
            f"rbd:{evil}:{own}"
        assert pvc["metadata"]["annotations"]["robin.io/volume"] == f"rbd:{evil}:{own}"
        assert ("Warning", "VolumeAnnotationIgnored") in [e[:2] for e in events(kube, evil, body["metadata"]["name"])]
    eventually(lambda: process.metrics().get('robin_provisioner_errors_total{operation="claim",reason="not_yet"}'),
               what="the clone of a claim bound to nothing of evil's to be held back")
    assert stored(kube, PVCS, evil, clone["metadata"]["name"])["status"]["phase"] == "Pending"
    # finance's project holds its one image and nothing evil made; its image is as it was
    assert _volume_names(robin_api, finance) == [victim["spec"]["volumeName"]]
    assert victim_state(rbd_ioctx, db_rows, victim["spec"]["volumeName"]) == before

    kubectl(kube, "delete", "-n", evil, "pvc", takeover["metadata"]["name"], own_name["metadata"]["name"],
            clone["metadata"]["name"], pointing["metadata"]["name"], f"--timeout={WAIT_S}s")
    eventually(lambda: _volume_names(robin_api, evil) == [], what="evil's own volumes to be deleted")
    assert victim_state(rbd_ioctx, db_rows, victim["spec"]["volumeName"]) == before


def test_in_tree_class_without_a_ceph_user_never_defaults_to_admin(kubernetes_1_30, kube, provisioners, robin_api):
    provisioners()
    ns = namespace(kube)
    klass = storage_class(parameters={"volumeSource": "in-tree", "userSecretName": "ceph-secret"})
    pvc = claim(ns, klass)
    create(kube, klass, pvc)
    name = pvc["metadata"]["name"]
    failed = eventually(lambda: [e for e in events(kube, ns, name) if e[1] == "ProvisioningFailed"],
                        what="a ProvisioningFailed event")
    assert failed[0][0] == "Warning" and "volumeSource in-tree needs userId" in failed[0][2]
    assert "never the admin user" in failed[0][2]
    assert stored(kube, PVCS, ns, name)["status"]["phase"] == "Pending" and not kube.store.objects[PVS.key]
    assert robin_api("GET", f"/api/v2/projects/{ns}").status_code == 404  # refused before anything was made


# --- expansion --------------------------------------------------------------------------------------------------

def test_expanding_an_rbd_claim_grows_the_image_and_leaves_the_file_system_to_the_node(kube, provisioners,
                                                                                      rbd_ioctx):
    provisioners()
    ns, pvc = bound_claim(kube, storage_class(allowVolumeExpansion=True))
    name = pvc["metadata"]["name"]
    kubectl(kube, "patch", "-n", ns, "pvc", name, "-p", '{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}')
    kubectl(kube, "wait", "-n", ns, f"pvc/{name}", f"--timeout={WAIT_S}s",
            "--for=jsonpath={.status.conditions[0].type}=FileSystemResizePending")
    pvc = get_claim(kube, ns, name)
    assert volume_of(kube, pvc)["spec"]["capacity"]["storage"] == "3Gi"
    assert rbd_size(rbd_ioctx, pvc["spec"]["volumeName"]) == 3 * GiB
    assert pvc["status"]["capacity"]["storage"] == "1Gi"  # until kubelet has grown the file system
    assert pvc["status"]["allocatedResourceStatuses"] == {"storage": "NodeResizePending"}
    assert ("Normal", "VolumeResizeSuccessful") in [e[:2] for e in events(kube, ns, name)]


def test_expanding_a_cephfs_claim_raises_the_quota_and_the_claims_capacity(kube, provisioners, fs):
    provisioners()
    ns, pvc = bound_claim(kube, storage_class("robin.io/cephfs", allowVolumeExpansion=True), size="100Mi",
                          modes=("ReadWriteMany",))
    name = pvc["metadata"]["name"]
    kubectl(kube, "patch", "-n", ns, "pvc", name, "-p", '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}')
    kubectl(kube, "wait", "-n", ns, f"pvc/{name}", f"--timeout={WAIT_S}s",
            "--for=jsonpath={.status.capacity.storage}=1Gi")
    pvc = get_claim(kube, ns, name)
    path = volume_of(kube, pvc)["spec"]["csi"]["volumeAttributes"]["path"]
    assert int(fs.getxattr(path, "ceph.quota.max_bytes")) == GiB
    assert not [c for c in pvc["status"].get("conditions", []) if c["type"] == "FileSystemResizePending"]


# --- reclaim ----------------------------------------------------------------------------------------------------

def test_delete_policy_moves_the_image_to_the_trash_then_removes_the_pv(kube, provisioners, rbd_ioctx, db_rows):
    provisioners()
    ns, pvc = bound_claim(kube, storage_class(reclaimPolicy="Delete"))
    image = pvc["spec"]["volumeName"]
    kubectl(kube, "delete", "-n", ns, "pvc", pvc["metadata"]["name"])
    eventually(lambda: stored(kube, PVS, "", image) is None, what="the PV to go")
    assert in_rbd_trash(rbd_ioctx, image) and rbd_size(rbd_ioctx, image) is None
    [row] = db_rows(select(RbdImage).where(RbdImage.name == image))
    assert row.state.value == "deleted" and row.deleted_at is not None


def test_retain_policy_keeps_volume_and_pv_and_deleting_the_pv_keeps_the_volume(kube, provisioners, rbd_ioctx,
                                                                               robin_api):
    provisioners()
    ns, pvc = bound_claim(kube, storage_class(reclaimPolicy="Retain"))
    image = pvc["spec"]["volumeName"]
    kubectl(kube, "delete", "-n", ns, "pvc", pvc["metadata"]["name"])
    kubectl(kube, "wait", f"pv/{image}", "--for=jsonpath={.status.phase}=Released", f"--timeout={WAIT_S}s")
    kubectl(kube, "delete", "pv", image, f"--timeout={WAIT_S}s")  # waits until the finalizers are gone
    assert stored(kube, PVS, "", image) is None
    assert rbd_size(rbd_ioctx, image) == GiB
    assert robin_api("GET", f"/api/v2/projects/{ns}/rbd-images/{image}").json()["state"] == "available"


def _switch_to_retain(kube, ns: str, pv: str, klass: dict) -> None:
    kubectl(kube, "patch", "pv", pv, "-p", '{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}')


def _bind_again(kube, ns: str, pv: str, klass: dict) -> None:
    """As an admin reuses a Released PV: its claimRef cleared, a new claim naming it binds it."""
    kubectl(kube, "patch", "pv", pv, "--type=json", "-p", '[{"op":"remove","path":"/spec/claimRef"}]')
    reuse = claim(ns, klass, volumeName=pv)
    create(kube, reuse)
    wait_bound(kube, ns, reuse["metadata"]["name"])


@pytest.mark.parametrize("change", [_switch_to_retain, _bind_again], ids=["switched-to-retain", "bound-again"])
def test_a_pv_changed_while_the_cache_lags_behind_keeps_its_volume(kube, provisioners, rbd_ioctx, robin_api, db_rows,
                                                                   change):
    """The provisioner's PV cache shows the PV Released with policy Delete, while the API server already has it
    switched to Retain, or bound to a new claim: robin decides on the PV as it is, and the data stays."""
    process = provisioners()
    klass = storage_class(reclaimPolicy="Delete")
    ns, pvc = bound_claim(kube, klass)
    image = pvc["spec"]["volumeName"]
    with rbd.Image(rbd_ioctx, image) as handle:
        handle.write(b"payroll, keep", 0)
    kube.faults.hold_watches(PVS)  # from here the provisioner sees no change of a PV ...
    try:
        kubectl(kube, "delete", "-n", ns, "pvc", pvc["metadata"]["name"])
        released = eventually(lambda: (stored(kube, PVS, "", image).get("status") or {}).get("phase") == "Released"
                              and stored(kube, PVS, "", image)["metadata"]["resourceVersion"], what="the PV Released")
        change(kube, ns, image, klass)
        kube.faults.hold_watches(PVS, at=int(released))  # ... but the Released one, before the admin's change
        eventually(lambda: "changed since it was last seen" in process.log() or in_rbd_trash(rbd_ioctx, image),
                   what="the provisioner to act on the Released PV it sees")
    finally:
        kube.faults.release_watches()
    assert not in_rbd_trash(rbd_ioctx, image)
    with rbd.Image(rbd_ioctx, image, read_only=True) as handle:
        assert handle.read(0, 13) == b"payroll, keep"
    [row] = db_rows(select(RbdImage).where(RbdImage.name == image))
    assert row.state.value == "available" and row.deleted_at is None
    pv = stored(kube, PVS, "", image)
    assert pv is not None and not pv["metadata"].get("deletionTimestamp")
    if change is _switch_to_retain:
        # Deleting the Retain PV now: the provisioner, caught up, lets go of it and keeps the volume.
        kubectl(kube, "delete", "pv", image, f"--timeout={WAIT_S}s")
    else:
        assert pv["status"]["phase"] == "Bound"
    assert not in_rbd_trash(rbd_ioctx, image) and rbd_size(rbd_ioctx, image) == GiB
    assert robin_api("GET", f"/api/v2/projects/{ns}/rbd-images/{image}").json()["state"] == "available"


# --- crashes ----------------------------------------------------------------------------------------------------

def _volume_names(robin_api, project: str) -> list[str]:
    response = robin_api("GET", f"/api/v2/projects/{project}/rbd-images?limit=1000")
    return [] if response.status_code == 404 else [item["name"] for item in response.json()["items"]]


@pytest.mark.parametrize("point", ["provisioner.claim_held", "provisioner.volume_created", "provisioner.pv_created"])
def test_killed_while_provisioning_then_restarted_makes_one_volume_and_one_pv(kube, provisioners, robin_api,
                                                                               rbd_ioctx, point):
    crashing = provisioners(env={"ROBIN_FAULT_POINTS": point})
    ns = namespace(kube)
    klass = storage_class()
    pvc = claim(ns, klass)
    create(kube, klass, pvc)
    eventually(lambda: not crashing.alive, what=f"the provisioner to die at {point}")
    assert crashing.process.returncode == -9
    provisioners()
    wait_bound(kube, ns, pvc["metadata"]["name"])
    uid = get_claim(kube, ns, pvc["metadata"]["name"])["metadata"]["uid"]
    assert _volume_names(robin_api, ns) == [f"pvc-{uid}"]
    assert [pv["metadata"]["name"] for pv in kube.store.objects[PVS.key].values()] == [f"pvc-{uid}"]
    assert rbd_size(rbd_ioctx, f"pvc-{uid}") == GiB
    claim_now = get_claim(kube, ns, pvc["metadata"]["name"])
    eventually(lambda: "robin.io/provisioning" not in (
        stored(kube, PVCS, ns, pvc["metadata"]["name"])["metadata"].get("finalizers") or []),
        what="the provisioning finalizer to go")
    assert claim_now["metadata"]["annotations"]["robin.io/volume"] == f"rbd:{ns}:pvc-{uid}"


def test_claim_deleted_while_the_provisioner_was_down_leaves_no_volume(kube, provisioners, robin_api, rbd_ioctx):
    crashing = provisioners(env={"ROBIN_FAULT_POINTS": "provisioner.volume_created"})
    ns = namespace(kube)
    klass = storage_class()
    pvc = claim(ns, klass)
    create(kube, klass, pvc)
    eventually(lambda: not crashing.alive, what="the provisioner to die after creating the volume")
    uid = stored(kube, PVCS, ns, pvc["metadata"]["name"])["metadata"]["uid"]
    assert _volume_names(robin_api, ns) == [f"pvc-{uid}"]
    kubectl(kube, "delete", "-n", ns, "pvc", pvc["metadata"]["name"], "--wait=false")
    # the provisioning finalizer holds the claim until a provisioner has dealt with its volume
    assert stored(kube, PVCS, ns, pvc["metadata"]["name"])["metadata"]["deletionTimestamp"]
    provisioners()
    eventually(lambda: stored(kube, PVCS, ns, pvc["metadata"]["name"]) is None, what="the claim to go")
    assert _volume_names(robin_api, ns) == []
    assert in_rbd_trash(rbd_ioctx, f"pvc-{uid}")
    assert not kube.store.objects[PVS.key]


def test_killed_while_deleting_then_restarted_finishes_the_delete(kube, provisioners, rbd_ioctx):
    crashing = provisioners(env={"ROBIN_FAULT_POINTS": "provisioner.volume_deleted"})
    ns, pvc = bound_claim(kube, storage_class(reclaimPolicy="Delete"))
    image = pvc["spec"]["volumeName"]
    kubectl(kube, "delete", "-n", ns, "pvc", pvc["metadata"]["name"])
    eventually(lambda: not crashing.alive, what="the provisioner to die after deleting the volume")
    assert stored(kube, PVS, "", image) is not None and in_rbd_trash(rbd_ioctx, image)
    provisioners()
    eventually(lambda: stored(kube, PVS, "", image) is None, what="the PV to go")


def test_killed_after_resizing_then_restarted_finishes_the_expansion(kube, provisioners, fs):
    crashing = provisioners(env={"ROBIN_FAULT_POINTS": "provisioner.volume_resized"})
    ns, pvc = bound_claim(kube, storage_class("robin.io/cephfs", allowVolumeExpansion=True), size="100Mi")
    name = pvc["metadata"]["name"]
    kubectl(kube, "patch", "-n", ns, "pvc", name, "-p", '{"spec":{"resources":{"requests":{"storage":"200Mi"}}}}')
    eventually(lambda: not crashing.alive, what="the provisioner to die after resizing the volume")
    pv_name = get_claim(kube, ns, name)["spec"]["volumeName"]
    path = stored(kube, PVS, "", pv_name)["spec"]["csi"]["volumeAttributes"]["path"]
    assert int(fs.getxattr(path, "ceph.quota.max_bytes")) == 200 * MiB
    assert stored(kube, PVS, "", pv_name)["spec"]["capacity"]["storage"] == "100Mi"  # not recorded yet
    provisioners()
    kubectl(kube, "wait", "-n", ns, f"pvc/{name}", f"--timeout={WAIT_S}s",
            "--for=jsonpath={.status.capacity.storage}=200Mi")
    assert stored(kube, PVS, "", pv_name)["spec"]["capacity"]["storage"] == "200Mi"


def _taken_up(kube, ns: str, names: list[str]) -> int:
    """How many of the claims carry the annotation naming their volume, the provisioner's first write."""
    return sum(VOLUME_ANNOTATION in (stored(kube, PVCS, ns, name)["metadata"].get("annotations") or {})
               for name in names)


def test_killed_at_random_moments_under_load_neither_leaks_nor_duplicates(kube, provisioners, robin_api, rbd_ioctx):
    chance = random.Random(20261127)
    ns = namespace(kube)
    klass = storage_class()
    claims = [claim(ns, klass) for _ in range(24)]
    create(kube, klass)
    process = provisioners()
    for number in range(4):
        batch = [c["metadata"]["name"] for c in claims[number * 6:(number + 1) * 6]]
        create(kube, *claims[number * 6:(number + 1) * 6])
        # A random moment in the middle of provisioning: once the provisioner has taken up a random number of the
        # batch's claims (their first write done), whatever it is doing with them and the others then.
        taken_up = chance.randint(1, len(batch))
        eventually(lambda batch=batch, taken_up=taken_up: _taken_up(kube, ns, batch) >= taken_up,
                   what=f"the provisioner to take up {taken_up} claims")
        process.kill()
        process = provisioners()
    wait_bound(kube, ns, *[c["metadata"]["name"] for c in claims])
    uids = sorted(stored(kube, PVCS, ns, c["metadata"]["name"])["metadata"]["uid"] for c in claims)
    expected = [f"pvc-{uid}" for uid in uids]
    assert sorted(_volume_names(robin_api, ns)) == expected
    assert sorted(kube.store.objects[PVS.key]) == [("", name) for name in expected]
    in_ceph = [name for name in rbd.RBD().list(rbd_ioctx) if name in expected]
    assert sorted(in_ceph) == expected


# --- replicas and API trouble -----------------------------------------------------------------------------------

def _holder(kube) -> str | None:
    lease = stored(kube, LEASES, RELEASE_NAMESPACE, "robin-provisioner")
    return lease and lease["spec"].get("holderIdentity")


def test_two_replicas_only_the_leader_acts_and_the_other_takes_over(kube, provisioners):
    first = provisioners(identity="replica-a")
    eventually(lambda: _holder(kube) == "replica-a", what="replica-a to lead")
    second = provisioners(identity="replica-b")
    ns = namespace(kube)
    klass = storage_class()
    claims = [claim(ns, klass) for _ in range(4)]
    create(kube, klass, *claims)
    wait_bound(kube, ns, *[c["metadata"]["name"] for c in claims])
    provisioned = 'robin_provisioner_operations_total{operation="provision",outcome="ok"}'
    assert first.metrics()[provisioned] == 4
    assert second.metrics().get(provisioned, 0) == 0 and second.metrics()["robin_provisioner_leader"] == 0

    first.kill()  # no lease released: the other waits for it to expire
    eventually(lambda: _holder(kube) == "replica-b", what="replica-b to take over")
    later = [claim(ns, klass) for _ in range(2)]
    create(kube, *later)
    wait_bound(kube, ns, *[c["metadata"]["name"] for c in later])
    assert second.metrics()[provisioned] == 2
    assert stored(kube, LEASES, RELEASE_NAMESPACE, "robin-provisioner")["spec"]["leaseTransitions"] >= 1


def test_graceful_stop_releases_the_lease_at_once(kube, provisioners):
    first = provisioners(identity="replica-a", env={"ROBIN_PROVISIONER_LEASE_DURATION": "60",
                                                    "ROBIN_PROVISIONER_RENEW_DEADLINE": "40"})
    eventually(lambda: _holder(kube) == "replica-a", what="replica-a to lead")
    provisioners(identity="replica-b", env={"ROBIN_PROVISIONER_LEASE_DURATION": "60",
                                            "ROBIN_PROVISIONER_RENEW_DEADLINE": "40"})
    assert first.stop() == 0
    # a 60 s lease, taken over within the default wait: only possible because replica-a gave it up
    eventually(lambda: _holder(kube) == "replica-b", timeout=20, what="replica-b to take the released lease")


def test_api_errors_dropped_watches_and_expired_versions_are_survived(kube, provisioners):
    process = provisioners()
    ns = namespace(kube)
    klass = storage_class()
    create(kube, klass)
    watches_before = kube.watch_requests

    def provision_a_batch_while(trouble, until=None) -> None:
        """Three claims made once `trouble` began; when `until` is given, the faults last until it holds."""
        batch = [claim(ns, klass) for _ in range(3)]
        trouble()
        for body in batch:  # straight into the store: kubectl would get the injected errors too
            kube.store.create(PVCS, ns, body)
        if until is not None:
            eventually(until, what="the provisioner to meet the faults")
            kube.faults.clear()
        eventually(lambda: all(stored(kube, PVCS, ns, c["metadata"]["name"])["status"].get("phase") == "Bound"
                               for c in batch), what="the batch to be bound")

    def claim_errors() -> float:
        return sum(v for k, v in process.metrics().items()
                   if k.startswith('robin_provisioner_errors_total{operation="claim",reason="InternalError"'))

    # Every request fails until the provisioner has met a 500 while handling a claim, however long it takes.
    provision_a_batch_while(lambda: kube.faults.fail_requests(500), until=lambda: claim_errors() > 0)
    provision_a_batch_while(lambda: kube.faults.fail_requests(429, count=6, retry_after=1))
    provision_a_batch_while(lambda: kube.faults.drop_watches(abruptly=True))

    def expire_while_the_watches_are_down():
        kube.faults.fail_requests(503)  # no watch comes back ...
        kube.faults.drop_watches()
        kube.store.create(PVCS, ns, claim(ns, klass))  # ... while the claims move on ...
        kube.faults.compact()  # ... and the versions they last saw expire: each must list again
        kube.faults.clear()

    provision_a_batch_while(expire_while_the_watches_are_down)
    assert kube.faults.failed > 0 and kube.watch_requests > watches_before
    restarts = process.metrics()
    assert restarts['robin_provisioner_watch_restarts_total{reason="expired",resource="PersistentVolumeClaim"}'] >= 1


# --- cost -------------------------------------------------------------------------------------------------------

CLAIMS_COUNTED = 5
WORKERS = 4


def robin_requests(robin_api) -> collections.Counter:
    """robin serve's requests so far, by (method, route, status), from its /metrics (the scrapes left out)."""
    counts = collections.Counter()
    for line in robin_api("GET", "/metrics").text.splitlines():
        if line.startswith("robin_http_request_duration_seconds_count{"):
            labels, _, value = line.removeprefix("robin_http_request_duration_seconds_count").rpartition(" ")
            parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if parsed["route"] != "/metrics":
                counts[parsed["method"], parsed["route"], parsed["status"]] += int(float(value))
    return counts


def test_a_claim_costs_four_kubernetes_writes_and_one_robin_request(kube, provisioners, robin_api, monkeypatch):
    """The requests the provisioner makes per claim, counted by the servers: the finalizer and volume annotation,
    the PV, the finalizer's removal and the ProvisioningSucceeded Event, and robin's create; no reads of single
    objects (the informers' caches answer) and no second removal of the finalizer while the cache lags behind."""
    ns = namespace(kube)
    klass = storage_class(parameters={"pool": "rbd"})
    warm_up = claim(ns, klass)
    process = provisioners(env={"ROBIN_PROVISIONER_LEADER_ELECT": "false"})
    create(kube, klass, warm_up)
    wait_bound(kube, ns, warm_up["metadata"]["name"])
    process.stop()  # the claims counted are made while no provisioner runs, so kubectl's requests are not counted
    claims = [claim(ns, klass) for _ in range(CLAIMS_COUNTED)]
    create(kube, *claims)
    requests_seen = collections.Counter()
    check = kube.faults.check

    def counting(method: str, path: str) -> None:
        parts = path.strip("/").split("/")
        parts = parts[2:] if parts[0] == "api" else parts[3:]  # after /api/v1 or /apis/<group>/<version>
        if parts[-1] == "status":
            requests_seen[method, parts[-3] + "/status"] += 1
        elif len(parts) % 2 == 0:  # one object
            requests_seen[method, parts[-2]] += 1
        elif method != "GET":  # a create; lists and watches (GETs of a collection) are the informers'
            requests_seen[method, parts[-1]] += 1
        check(method, path)

    monkeypatch.setattr(kube.faults, "check", counting)
    robin_before = robin_requests(robin_api)
    process = provisioners(env={"ROBIN_PROVISIONER_LEADER_ELECT": "false", "ROBIN_PROVISIONER_WORKERS": str(WORKERS)})

    def settled() -> bool:
        done = []
        for pvc in claims:
            stored_claim = stored(kube, PVCS, ns, pvc["metadata"]["name"])
            done.append(stored_claim["status"].get("phase") == "Bound"
                        and "robin.io/provisioning" not in stored_claim["metadata"].get("finalizers", [])
                        and ("Normal", "ProvisioningSucceeded") in [e[:2] for e in events(kube, ns,
                                                                                          pvc["metadata"]["name"])])
        return all(done) and process.metrics()["robin_provisioner_queue_depth"] == 0

    eventually(settled, what="the claims Bound, released and reported")
    assert dict(requests_seen) == {("PATCH", "persistentvolumeclaims"): 2 * CLAIMS_COUNTED,
                                   ("POST", "persistentvolumes"): CLAIMS_COUNTED,
                                   ("POST", "events"): CLAIMS_COUNTED}
    # robin: one create per claim; besides, once per process, the project's existence and the cluster's description
    # (asked by each worker that needs them before the first answer is kept: at most one each per worker)
    robin_seen = robin_requests(robin_api) - robin_before
    assert robin_seen.pop(("POST", "/api/v2/projects/<project>/rbd-images", "201")) == CLAIMS_COUNTED
    once_per_process = {("GET", "/api/v2/projects/<project>", "200"), ("GET", "/api/v2/clusters/<name>", "200")}
    assert robin_seen.keys() == once_per_process and max(robin_seen.values()) <= WORKERS
