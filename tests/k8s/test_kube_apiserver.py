"""The test Kubernetes API server (tests/kube_apiserver) against the real kubectl and the official Python client."""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from tests.kube_apiserver import KubeApiServer
from tests.kube_apiserver.resources import PVCS, PVS
from tests.support.net import eventually

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
REPO = Path(__file__).resolve().parents[2]




@pytest.fixture
def server():
    with KubeApiServer.running(bookmark_interval=0.3) as server:
        yield server


@pytest.fixture
def api_client(server):
    api_client = k8s_config.new_client_from_config(config_file=server.kubeconfig_path)
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def core(api_client):
    return k8s.CoreV1Api(api_client)


def settled(server):
    """Waits for the controllers, which run after the writes as in a real cluster, to have done their work."""
    assert server.store.controllers.wait_idle(timeout=120), "the controllers did not settle"


def pvc_body(name, storage="1Gi", **spec):
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}, **spec}}


def pv_body(name, claim_namespace=None, claim_name=None, storage="1Gi"):
    spec = {"capacity": {"storage": storage}, "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": "robin.example.com", "volumeHandle": name}}
    if claim_name:
        spec["claimRef"] = {"namespace": claim_namespace, "name": claim_name}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}


def raw(server, method, path, body=None, content_type="application/json", token=True):
    """A plain HTTP request (a body of bytes is sent as is); returns (status, headers, parsed JSON body or text)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {server.token if token is True else token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, headers, payload = e.code, e.headers, e.read()
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode()


def first_event(body):
    """The first event of a watch stream read by raw() (which parses a one-line stream itself)."""
    return json.loads(body.splitlines()[0]) if isinstance(body, str) else body


# --- kubectl ------------------------------------------------------------------------------------------------

@pytest.fixture
def kubectl(server, tmp_path):
    def run(*args, check=True, timeout=30):
        result = subprocess.run([KUBECTL, "--kubeconfig", server.kubeconfig_path, "--cache-dir",
                                 str(tmp_path / "kube-cache"), *args], capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result
    return run


MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: robin
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: robin.example.com
parameters:
  pool: rbd
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: demo
  labels:
    app: robin
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
"""

PV_MANIFEST = """\
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-data
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: robin
  claimRef: {namespace: demo, name: data}
  csi: {driver: robin.example.com, volumeHandle: vol-1}
"""


@needs_kubectl
def test_kubectl_create_get_patch_wait_delete(server, kubectl, tmp_path):
    (tmp_path / "manifests.yaml").write_text(MANIFESTS)
    (tmp_path / "pv.yaml").write_text(PV_MANIFEST)

    out = kubectl("create", "-f", str(tmp_path / "manifests.yaml")).stdout  # default (strict) validation
    assert "namespace/demo created" in out and "persistentvolumeclaim/data created" in out
    assert "already exists" in kubectl("create", "-f", str(tmp_path / "manifests.yaml"), check=False).stderr

    pvc = json.loads(kubectl("get", "pvc", "-n", "demo", "-o", "json").stdout)["items"][0]
    assert pvc["metadata"]["name"] == "data" and pvc["status"]["phase"] == "Pending"
    assert pvc["spec"]["storageClassName"] == "robin"  # the default StorageClass was applied
    assert int(pvc["metadata"]["resourceVersion"]) > 0 and pvc["metadata"]["uid"]
    assert json.loads(kubectl("get", "sc", "robin", "-o", "json").stdout)["reclaimPolicy"] == "Delete"
    assert "data" in kubectl("get", "pvc", "-n", "demo", "-l", "app=robin").stdout

    kubectl("patch", "pvc", "data", "-n", "demo", "-p", '{"metadata":{"labels":{"tier":"gold"},'
                                                         '"finalizers":["robin.example.com/keep"]}}')
    kubectl("patch", "pvc", "data", "-n", "demo", "--type", "merge", "-p", '{"metadata":{"annotations":{"a":"b"}}}')
    kubectl("patch", "pvc", "data", "-n", "demo", "--type", "json",
            "-p", '[{"op":"replace","path":"/metadata/labels/tier","value":"silver"}]')
    pvc = json.loads(kubectl("get", "pvc", "data", "-n", "demo", "-o", "json").stdout)
    assert pvc["metadata"]["labels"] == {"app": "robin", "tier": "silver"}
    # The default class binds immediately: the PV controller asked its provisioner for a volume.
    assert pvc["metadata"]["annotations"] == {"a": "b", "volume.kubernetes.io/storage-provisioner": "robin.example.com",
                                              "volume.beta.kubernetes.io/storage-provisioner": "robin.example.com"}
    assert pvc["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection", "robin.example.com/keep"]
    invalid = kubectl("patch", "pvc", "data", "-n", "demo", "-p", '{"spec":{"accessModes":["ReadWriteMany"]}}',
                      check=False)
    assert invalid.returncode != 0 and "immutable" in invalid.stderr

    waiter = subprocess.Popen([KUBECTL, "--kubeconfig", server.kubeconfig_path, "--cache-dir",
                               str(tmp_path / "kube-cache"), "wait", "--for=jsonpath={.status.phase}=Bound",
                               "pvc/data", "-n", "demo", "--timeout=30s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: server.watch_requests > 0, what="kubectl wait to watch")
        kubectl("create", "-f", str(tmp_path / "pv.yaml"))
        out, err = waiter.communicate(timeout=30)
    finally:
        waiter.kill()
        waiter.wait()
    assert waiter.returncode == 0, err
    assert "condition met" in out
    pvc = json.loads(kubectl("get", "pvc", "data", "-n", "demo", "-o", "json").stdout)
    assert pvc["spec"]["volumeName"] == "pv-data"
    assert pvc["status"] == {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}
    pv = json.loads(kubectl("get", "pv", "pv-data", "-o", "json").stdout)
    assert pv["status"]["phase"] == "Bound" and pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]

    # Deleting waits for our finalizer: kubectl gives up waiting, the PVC stays with a deletionTimestamp.
    kubectl("delete", "pvc", "data", "-n", "demo", "--wait=false")
    pvc = json.loads(kubectl("get", "pvc", "data", "-n", "demo", "-o", "json").stdout)
    assert pvc["metadata"]["deletionTimestamp"] and pvc["metadata"]["finalizers"] == ["robin.example.com/keep"]
    kubectl("patch", "pvc", "data", "-n", "demo", "--type", "json",
            "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    assert "NotFound" in kubectl("get", "pvc", "data", "-n", "demo", check=False).stderr
    kubectl("wait", "--for=jsonpath={.status.phase}=Released", "pv/pv-data", "--timeout=10s")

    kubectl("delete", "pv", "pv-data", "--timeout=10s")
    kubectl("delete", "-f", str(tmp_path / "manifests.yaml"), "--ignore-not-found", "--timeout=10s")
    assert "demo" not in kubectl("get", "ns", "-o", "name").stdout
    assert json.loads(kubectl("get", "sc", "-o", "json").stdout)["items"] == []


@needs_kubectl
def test_kubectl_discovery_and_version(kubectl):
    resources = kubectl("api-resources", "--no-headers").stdout
    for line in ("persistentvolumeclaims   pvc", "persistentvolumes        pv", "storageclasses           sc",
                 "namespaces               ns", "leases", "events", "pods po", "endpoints ep"):
        assert " ".join(line.split()) in " ".join(resources.split()), resources
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["major"] == "1"


@needs_kubectl
def test_standalone_server_for_kubectl(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen([sys.executable, "-m", "tests.kube_apiserver", "--port", "0", "--kubeconfig",
                                str(kubeconfig)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + process.stderr.read()
        assert kubeconfig.exists()
        result = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                                 "get", "ns", "default", "-o", "name"], capture_output=True, text=True, timeout=30)
        assert result.stdout.strip() == "namespace/default", result.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0


# --- Python client ------------------------------------------------------------------------------------------

def test_list_then_watch_sees_added_modified_deleted(server, core):
    listing = core.list_namespaced_persistent_volume_claim("default")
    assert listing.items == []
    rv = listing.metadata.resource_version

    core.create_namespaced_persistent_volume_claim("default", pvc_body("a"))
    core.patch_namespaced_persistent_volume_claim("a", "default", {"metadata": {"labels": {"x": "y"}}})
    core.delete_namespaced_persistent_volume_claim("a", "default")  # pvc-protection goes away at once

    seen = []
    w = k8s_watch.Watch()
    for event in w.stream(core.list_namespaced_persistent_volume_claim, "default", resource_version=rv,
                          timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            w.stop()
    assert seen[0] == ("ADDED", "a") and seen[-1] == ("DELETED", "a")
    assert {t for t, _ in seen[1:-1]} == {"MODIFIED"}

    # Cluster-wide watch of a namespaced kind, without resourceVersion: synthetic ADDED for what exists.
    core.create_namespaced_persistent_volume_claim("kube-system", pvc_body("b"))
    w = k8s_watch.Watch()
    for event in w.stream(core.list_persistent_volume_claim_for_all_namespaces, timeout_seconds=10):
        assert (event["type"], event["object"].metadata.namespace) == ("ADDED", "kube-system")
        w.stop()


def test_selectors_limit_and_continue(server, core):
    for i in range(5):
        core.create_namespaced_persistent_volume_claim(
            "default", {**pvc_body(f"p{i}"), "metadata": {"name": f"p{i}", "labels": {"even": str(i % 2 == 0)}}})
    names = [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(
        "default", label_selector="even=True").items]
    assert names == ["p0", "p2", "p4"]
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(
        "default", label_selector="even in (False),!missing").items] == ["p1", "p3"]
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(
        "default", field_selector="metadata.name=p3").items] == ["p3"]
    page = core.list_namespaced_persistent_volume_claim("default", limit=2)
    pages = [[p.metadata.name for p in page.items]]
    while page.metadata._continue:
        page = core.list_namespaced_persistent_volume_claim("default", limit=2, _continue=page.metadata._continue)
        pages.append([p.metadata.name for p in page.items])
    assert pages == [["p0", "p1"], ["p2", "p3"], ["p4"]]


def test_lists_carry_no_item_kinds_and_pages_may_be_short(server, core):
    """api-conventions.md, "Lists and Simple kinds": a list's items carry no kind or apiVersion (the list's kind
    says what they are); api-concepts.md, "Retrieving large results sets in chunks": a server may return fewer items
    than the limit, with a continue token while more remain, so a client follows the token."""
    for i in range(5):
        core.create_namespaced_persistent_volume_claim("default", pvc_body(f"p{i}"))
    status, _, listing = raw(server, "GET", "/api/v1/namespaces/default/persistentvolumeclaims")
    assert status == 200 and listing["kind"] == "PersistentVolumeClaimList" and listing["apiVersion"] == "v1"
    assert [sorted(set(item) & {"kind", "apiVersion"}) for item in listing["items"]] == [[]] * 5
    _, _, event = raw(server, "GET", "/api/v1/namespaces/default/persistentvolumeclaims?watch=1&timeoutSeconds=1")
    assert first_event(event)["object"]["kind"] == "PersistentVolumeClaim"  # watch events keep theirs
    server.faults.short_pages(2)
    pages = []
    page = core.list_namespaced_persistent_volume_claim("default", limit=4)
    pages.append([p.metadata.name for p in page.items])
    while page.metadata._continue:
        page = core.list_namespaced_persistent_volume_claim("default", limit=4, _continue=page.metadata._continue)
        pages.append([p.metadata.name for p in page.items])
    assert pages == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert len(core.list_namespaced_persistent_volume_claim("default").items) == 5  # no limit, no pages
    server.faults.short_pages(0)
    assert len(core.list_namespaced_persistent_volume_claim("default", limit=4).items) == 4


def test_unknown_fields_and_wrong_types(server, api_client):
    """api-concepts.md, "Field validation": unknown fields are dropped; fieldValidation=Warn (the default) says so
    in a `Warning: 299` header, Strict refuses the request with a 400, Ignore drops them silently. A value of the
    wrong type does not decode: 400."""
    path = "/api/v1/namespaces/default/persistentvolumeclaims"
    body = {**pvc_body("w"), "metadata": {"name": "w", "colour": "red"}}
    body["spec"]["speed"] = "fast"
    status, headers, created = raw(server, "POST", path, body)
    assert status == 201 and "colour" not in created["metadata"] and "speed" not in created["spec"]
    assert headers.get_all("Warning") == ['299 - "unknown field \\"metadata.colour\\""',
                                          '299 - "unknown field \\"spec.speed\\""']
    status, _, refused = raw(server, "POST", path + "?fieldValidation=Strict", {**body, "metadata": {"name": "s"}})
    assert (status, refused["reason"]) == (400, "BadRequest")
    assert 'strict decoding error: unknown field "spec.speed"' in refused["message"]
    status, headers, _ = raw(server, "POST", path + "?fieldValidation=Ignore", {**body, "metadata": {"name": "i"}})
    assert status == 201 and headers.get_all("Warning") is None
    assert raw(server, "POST", path + "?fieldValidation=Loose", {**body, "metadata": {"name": "l"}})[0] == 400
    wrong = {**pvc_body("t"), "spec": {"accessModes": "ReadWriteOnce", "resources": {"requests": {"storage": "1"}}}}
    status, _, refused = raw(server, "POST", path, wrong)
    assert (status, refused["reason"]) == (400, "BadRequest") and "spec.accessModes" in refused["message"]
    status, _, refused = raw(server, "PATCH", path + "/w", {"spec": {"volumeMode": 3}},
                             content_type="application/merge-patch+json")
    assert status == 400
    assert sorted(server.store.objects[("", "persistentvolumeclaims")]) == [("default", "i"), ("default", "w")]


@needs_kubectl
def test_kubectl_field_validation(server, kubectl, tmp_path):
    """kubectl asks for Strict by default (--validate=strict), prints the server's warnings with --validate=warn."""
    manifest = tmp_path / "sc.yaml"
    manifest.write_text("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\n"
                        "provisioner: robin.example.com\nprovisioneer: typo\n")
    refused = kubectl("create", "-f", str(manifest), check=False)
    assert refused.returncode != 0 and 'unknown field "provisioneer"' in refused.stderr
    warned = kubectl("create", "--validate=warn", "-f", str(manifest))
    assert 'Warning: unknown field "provisioneer"' in warned.stderr
    assert "provisioneer" not in kubectl("get", "sc", "fast", "-o", "json").stdout


@pytest.mark.parametrize(("given", "canonical"), [
    ("1.5Gi", "1536Mi"), ("1Gi", "1Gi"), ("2048Ki", "2Mi"), ("0.5Gi", "512Mi"), ("512Ki", "512Ki"),
    ("1000", "1k"), ("1024", "1024"), ("1500M", "1500M"), ("1.5", "1500m"), ("100m", "100m"), ("1e3", "1e3"),
    ("0", "0"), ("0.5Ki", "512"), (5, "5"), ("1.0000000001", "1000000001n")])
def test_quantities_come_back_canonical(server, given, canonical):
    """resource.Quantity's canonical form (the type's documentation: "1.5Gi" is "1536Mi", "1000" is "1k"): what
    a real server stores and answers, whatever form the client sent (a JSON number too)."""
    body = pv_body("q")
    body["spec"]["capacity"]["storage"] = given
    status, _, created = raw(server, "POST", "/api/v1/persistentvolumes", body)
    assert status == 201 and created["spec"]["capacity"] == {"storage": canonical}
    assert server.store.get(PVS, "", "q")["spec"]["capacity"] == {"storage": canonical}


def test_persistent_volume_sources(server, core):
    """ValidatePersistentVolume: exactly one volume source, which (and the volume mode) cannot change."""
    def refused(call, *args):
        with pytest.raises(ApiException) as error:
            call(*args)
        assert error.value.status == 422
        return [c["field"] for c in json.loads(error.value.body)["details"]["causes"]]

    sourceless = pv_body("none")
    del sourceless["spec"]["csi"]
    assert refused(core.create_persistent_volume, sourceless) == ["spec"]
    two = pv_body("two")
    two["spec"]["glusterfs"] = {"endpoints": "gluster", "path": "vol"}
    assert refused(core.create_persistent_volume, two) == ["spec.glusterfs"]
    core.create_persistent_volume(pv_body("one"))
    assert refused(core.patch_persistent_volume, "one", {"spec": {"csi": {"volumeHandle": "other"}}}) == [
        "spec.persistentvolumesource"]
    assert refused(core.patch_persistent_volume, "one", {"spec": {"volumeMode": "Block"}}) == ["spec.volumeMode"]
    patched = core.patch_persistent_volume("one", {"spec": {"persistentVolumeReclaimPolicy": "Delete",
                                                            "capacity": {"storage": "2Gi"}}})
    assert patched.spec.persistent_volume_reclaim_policy == "Delete" and patched.spec.capacity == {"storage": "2Gi"}
    assert sorted(server.store.objects[("", "persistentvolumes")]) == [("", "one")]


def test_resource_versions_and_conflicts(server, core):
    created = core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    assert created.metadata.uid and created.metadata.generation == 1
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_persistent_volume_claim("default", pvc_body("c"))
    assert exists.value.status == 409 and json.loads(exists.value.body)["reason"] == "AlreadyExists"

    stale = core.read_namespaced_persistent_volume_claim("c", "default")
    stale.metadata.labels = {"first": "yes"}
    updated = core.replace_namespaced_persistent_volume_claim("c", "default", stale)
    assert int(updated.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.metadata.labels = {"second": "yes"}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_persistent_volume_claim("c", "default", stale)
    status = json.loads(conflict.value.body)
    assert conflict.value.status == 409 and status["kind"] == "Status" and status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    # A patch carrying a stale resourceVersion is a precondition that fails too.
    with pytest.raises(ApiException) as patch_conflict:
        core.patch_namespaced_persistent_volume_claim(
            "c", "default", {"metadata": {"resourceVersion": stale.metadata.resource_version, "labels": {"z": "1"}}})
    assert patch_conflict.value.status == 409
    # Status goes through the status subresource only; spec changes bump generation.
    pvc = core.read_namespaced_persistent_volume_claim("c", "default")
    pvc.status.phase = "Lost"
    assert core.replace_namespaced_persistent_volume_claim("c", "default", pvc).status.phase == "Pending"
    pvc = core.read_namespaced_persistent_volume_claim("c", "default")
    pvc.status.phase = "Lost"
    assert core.replace_namespaced_persistent_volume_claim_status("c", "default", pvc).status.phase == "Lost"
    named = core.patch_namespaced_persistent_volume_claim("c", "default", {"spec": {"volumeName": "elsewhere"}})
    assert named.metadata.generation == 2
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_persistent_volume_claim("nope", "default")
    assert missing.value.status == 404 and json.loads(missing.value.body)["reason"] == "NotFound"
    with pytest.raises(ApiException) as no_namespace:
        core.create_namespaced_persistent_volume_claim("nowhere", pvc_body("c"))
    assert no_namespace.value.status == 404


def test_finalizers_and_deletion_timestamp(server, core):
    body = pvc_body("f")
    body["metadata"]["finalizers"] = ["robin.example.com/cleanup"]
    core.create_namespaced_persistent_volume_claim("default", body)
    rv = core.list_namespaced_persistent_volume_claim("default").metadata.resource_version
    core.delete_namespaced_persistent_volume_claim("f", "default")
    settled(server)  # the protection controller has taken its finalizer away: no pod uses the claim
    deleting = core.read_namespaced_persistent_volume_claim("f", "default")
    assert deleting.metadata.deletion_timestamp is not None
    assert deleting.metadata.finalizers == ["robin.example.com/cleanup"]
    with pytest.raises(ApiException) as forbidden:
        core.patch_namespaced_persistent_volume_claim("f", "default", {"metadata": {"finalizers": ["new/one"]}})
    assert forbidden.value.status == 422
    core.patch_namespaced_persistent_volume_claim(
        "f", "default", [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_persistent_volume_claim("f", "default")
    assert gone.value.status == 404
    types, w = [], k8s_watch.Watch()
    for event in w.stream(core.list_namespaced_persistent_volume_claim, "default", resource_version=rv,
                          timeout_seconds=10):
        types.append(event["type"])
        if event["type"] == "DELETED":
            w.stop()
    assert types[-1] == "DELETED" and "MODIFIED" in types


def test_pv_controller_binds_and_releases(server, core):
    core.create_namespaced_persistent_volume_claim("default", pvc_body("claim", storageClassName="fast"))
    core.create_persistent_volume(pv_body("vol", "default", "claim", storage="5Gi"))
    settled(server)
    pvc = core.read_namespaced_persistent_volume_claim("claim", "default")
    assert pvc.status.phase == "Bound" and pvc.spec.volume_name == "vol"
    assert pvc.status.capacity == {"storage": "5Gi"} and pvc.status.access_modes == ["ReadWriteOnce"]
    pv = core.read_persistent_volume("vol")
    assert pv.status.phase == "Bound" and pv.spec.claim_ref.uid == pvc.metadata.uid
    # A PV that is not named by any claim stays Available; a claim naming a volume binds to it.
    core.create_persistent_volume(pv_body("spare"))
    settled(server)
    assert core.read_persistent_volume("spare").status.phase == "Available"
    core.create_namespaced_persistent_volume_claim("default", pvc_body("explicit", volumeName="spare"))
    settled(server)
    assert core.read_namespaced_persistent_volume_claim("explicit", "default").status.phase == "Bound"
    assert core.read_persistent_volume("spare").spec.claim_ref.name == "explicit"
    # Deleting a bound PV waits (pv-protection); deleting its claim releases it, and then it goes.
    core.delete_persistent_volume("vol")
    assert core.read_persistent_volume("vol").metadata.deletion_timestamp is not None
    core.delete_namespaced_persistent_volume_claim("explicit", "default")
    settled(server)
    assert core.read_persistent_volume("spare").status.phase == "Released"
    core.delete_namespaced_persistent_volume_claim("claim", "default")
    settled(server)
    with pytest.raises(ApiException):
        core.read_persistent_volume("vol")


def test_controllers_run_after_the_write(server, core):
    """api-conventions.md, "Spec and Status": a write records intent, controllers act on it afterwards in writes of
    their own ("Concurrency Control and Consistency": each with the resourceVersion it read, so a client's write in
    between makes it meet a 409 and look again)."""
    controllers = server.store.controllers
    server.faults.controllers(paused=True)
    core.create_namespaced_persistent_volume_claim("default", pvc_body("later"))
    core.create_persistent_volume(pv_body("for-later", "default", "later"))
    assert core.read_namespaced_persistent_volume_claim("later", "default").status.phase == "Pending"
    assert core.read_persistent_volume("for-later").status.phase == "Pending"  # as created: no controller yet
    server.faults.controllers(paused=False)
    settled(server)
    assert core.read_namespaced_persistent_volume_claim("later", "default").status.phase == "Bound"

    server.faults.controllers(delay=3600)  # a controller reads, then waits until told to write
    core.create_namespaced_persistent_volume_claim("default", pvc_body("raced"))
    core.create_persistent_volume(pv_body("for-raced", "default", "raced"))
    eventually(lambda: controllers.holding, what="a controller to hold its writes")
    conflicts = controllers.conflicts
    core.patch_namespaced_persistent_volume_claim("raced", "default", {"metadata": {"labels": {"by": "client"}}})
    server.faults.controllers(delay=0)
    settled(server)
    assert controllers.conflicts > conflicts
    raced = core.read_namespaced_persistent_volume_claim("raced", "default")
    assert raced.status.phase == "Bound" and raced.metadata.labels == {"by": "client"}  # nothing lost
    assert raw(server, "GET", "/_faults")[2]["controllers"]["conflicts"] == controllers.conflicts


@pytest.mark.parametrize(("claim", "volume", "binds"), [
    ({"storage": "2Gi"}, {"storage": "1Gi"}, False),  # too small
    ({"storage": "1Gi"}, {"storage": "2Gi"}, True),  # larger is fine
    ({"volumeMode": "Block"}, {}, False),
    ({"accessModes": ["ReadWriteMany"]}, {}, False),
    ({"accessModes": ["ReadWriteOnce"]}, {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}, True),
    ({"storageClassName": "gold"}, {}, True),  # a volume naming the claim binds whatever its class
    ({"storageClassName": "gold", "volumeName": "v"}, {}, False),  # a volume the claim names must be of its class
    ({"storageClassName": "gold", "volumeName": "v"}, {"storageClassName": "gold"}, True),
])
def test_binding_checks_the_volume_fits(server, core, claim, volume, binds):
    """The PV controller binds a claim only to a volume that satisfies it (checkVolumeSatisfyClaim,
    findMatchingVolume): capacity >= request, same volume mode, the claim's access modes, and the class of a
    volume the claim names."""
    pvc = pvc_body("c", storage=claim.pop("storage", "1Gi"), **claim)
    pv = pv_body("v", None if "volumeName" in claim else "default", None if "volumeName" in claim else "c",
                 storage=volume.pop("storage", "1Gi"))
    pv["spec"].update(volume)
    core.create_persistent_volume(pv)
    core.create_namespaced_persistent_volume_claim("default", pvc)
    settled(server)
    assert core.read_namespaced_persistent_volume_claim("c", "default").status.phase == (
        "Bound" if binds else "Pending")
    assert core.read_persistent_volume("v").status.phase == ("Bound" if binds else "Available")


def test_released_volumes_are_reclaimed_by_their_policy():
    """concepts/storage/persistent-volumes.md, "Reclaiming": once its claim is gone a volume is Released; with
    Delete, the PV controller deletes an in-tree (here: GlusterFS) volume and its PV; Retain keeps both; a CSI
    volume is its external provisioner's to delete. The write history shows who did what, in which order."""
    deleted = []
    with KubeApiServer.running(volume_deleter=lambda pv: deleted.append(pv["metadata"]["name"])) as server:
        api_client = k8s_config.new_client_from_config(config_file=server.kubeconfig_path)
        core = k8s.CoreV1Api(api_client)
        server.faults.controllers(paused=True)  # each volume and its claim first, then the binding
        for name, policy, source in (("gone", "Delete", "glusterfs"), ("kept", "Retain", "glusterfs"),
                                     ("external", "Delete", "csi")):
            pv = pv_body(f"pv-{name}", "default", name)
            pv["spec"]["persistentVolumeReclaimPolicy"] = policy
            if source == "glusterfs":
                del pv["spec"]["csi"]
                pv["spec"]["glusterfs"] = {"endpoints": "glusterfs-cluster", "path": f"vol_{name}"}
            core.create_persistent_volume(pv)
            core.create_namespaced_persistent_volume_claim("default", pvc_body(name))
        server.faults.controllers(paused=False)
        settled(server)
        for name in ("gone", "kept", "external"):
            core.delete_namespaced_persistent_volume_claim(name, "default")
        settled(server)
        assert deleted == ["pv-gone"]
        assert sorted(server.store.objects[PVS.key]) == [("", "pv-external"), ("", "pv-kept")]
        assert {pv.metadata.name: pv.status.phase for pv in core.list_persistent_volume().items} == {
            "pv-external": "Released", "pv-kept": "Released"}
        writes = [(w.type, w.resource, w.by, (w.object.get("status") or {}).get("phase"))
                  for w in server.store.writes if w.name in ("gone", "pv-gone")]
        assert writes == [
            ("ADDED", "persistentvolumes", "api", "Pending"),
            ("ADDED", "persistentvolumeclaims", "api", "Pending"),
            ("MODIFIED", "persistentvolumes", "persistentvolume-binder", "Bound"),
            ("MODIFIED", "persistentvolumeclaims", "persistentvolume-binder", "Bound"),
            ("MODIFIED", "persistentvolumeclaims", "api", "Bound"),  # deletionTimestamp: pvc-protection holds it
            ("DELETED", "persistentvolumeclaims", "pvc-protection-controller", "Bound"),
            ("MODIFIED", "persistentvolumes", "persistentvolume-binder", "Released"),
            ("MODIFIED", "persistentvolumes", "persistentvolume-binder", "Released"),  # deletionTimestamp
            ("DELETED", "persistentvolumes", "pv-protection-controller", "Released")]
        api_client.close()


PROVISIONER_ANNOTATIONS = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")


def storage_class_body(name, provisioner="robin.example.com", **fields):
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner, **fields}


def provisioner_of(core, name, namespace="default"):
    """The provisioner the PV controller asked for the claim's volume, None if none; checks both annotations."""
    annotations = core.read_namespaced_persistent_volume_claim(name, namespace).metadata.annotations or {}
    values = {annotations.get(key) for key in PROVISIONER_ANNOTATIONS}
    assert len(values) == 1, annotations
    return values.pop()


def test_pv_controller_asks_the_provisioner(server, api_client, core):
    storage = k8s.StorageV1Api(api_client)
    storage.create_storage_class(storage_class_body("fast"))
    core.create_namespaced_persistent_volume_claim("default", pvc_body("now", storageClassName="fast"))
    settled(server)
    assert provisioner_of(core, "now") == "robin.example.com"
    # Without a class, or with one that does not exist (yet), nobody is asked.
    core.create_namespaced_persistent_volume_claim("default", pvc_body("classless"))
    core.create_namespaced_persistent_volume_claim("default", pvc_body("empty", storageClassName=""))
    core.create_namespaced_persistent_volume_claim("default", pvc_body("early", storageClassName="slow"))
    going = pvc_body("going", storageClassName="slow")
    going["metadata"]["finalizers"] = ["robin.example.com/keep"]
    core.create_namespaced_persistent_volume_claim("default", going)
    core.delete_namespaced_persistent_volume_claim("going", "default")
    settled(server)
    for name in ("classless", "empty", "early", "going"):
        assert provisioner_of(core, name) is None
    # The class appearing later: its waiting claims are annotated then, but not one being deleted.
    storage.create_storage_class(storage_class_body("slow", "other.example.com"))
    settled(server)
    assert provisioner_of(core, "early") == "other.example.com"
    assert provisioner_of(core, "going") is None and provisioner_of(core, "classless") is None
    # A claim with a volume waiting for it binds to it instead.
    core.create_persistent_volume(pv_body("ready", "default", "prebound"))
    core.create_namespaced_persistent_volume_claim("default", pvc_body("prebound", storageClassName="fast"))
    settled(server)
    assert core.read_namespaced_persistent_volume_claim("prebound", "default").status.phase == "Bound"
    assert provisioner_of(core, "prebound") is None
    # WaitForFirstConsumer: only once the scheduler has picked a node.
    storage.create_storage_class(storage_class_body("late", volumeBindingMode="WaitForFirstConsumer"))
    core.create_namespaced_persistent_volume_claim("default", pvc_body("consumer", storageClassName="late"))
    settled(server)
    assert provisioner_of(core, "consumer") is None
    core.patch_namespaced_persistent_volume_claim(
        "consumer", "default", {"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}})
    settled(server)
    assert provisioner_of(core, "consumer") == "robin.example.com"


@needs_kubectl
def test_pvc_resize(server, api_client, core, kubectl):
    storage = k8s.StorageV1Api(api_client)
    storage.create_storage_class(storage_class_body("fixed"))
    storage.create_storage_class(storage_class_body("growing", allowVolumeExpansion=True))
    for name, class_name in (("fixed", "fixed"), ("growing", "growing")):
        core.create_namespaced_persistent_volume_claim("default", pvc_body(name, storageClassName=class_name))
        core.create_persistent_volume(pv_body(f"pv-{name}", "default", name))
        settled(server)
        assert core.read_namespaced_persistent_volume_claim(name, "default").status.capacity == {"storage": "1Gi"}

    def resize(name, size, check=True):
        return kubectl("patch", "pvc", name, "-p", json.dumps({"spec": {"resources": {"requests": {"storage": size}}}}),
                       check=check)

    # Only a bound claim's size may change, and grow only if its class allows volume expansion.
    core.create_namespaced_persistent_volume_claim("default", pvc_body("unbound", storageClassName="growing"))
    assert "spec is immutable after creation" in resize("unbound", "2Gi", check=False).stderr
    refused = resize("fixed", "2Gi", check=False)
    assert refused.returncode != 0
    assert ('Error from server (Forbidden): persistentvolumeclaims "fixed" is forbidden: only dynamically '
            "provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
            in refused.stderr), refused.stderr
    with pytest.raises(ApiException) as forbidden:
        core.patch_namespaced_persistent_volume_claim(
            "fixed", "default", {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})
    assert forbidden.value.status == 403 and json.loads(forbidden.value.body)["reason"] == "Forbidden"
    resize("fixed", "1024Mi")  # the same quantity written otherwise is no change
    resize("growing", "2Gi")
    pvc = core.read_namespaced_persistent_volume_claim("growing", "default")
    assert pvc.spec.resources.requests == {"storage": "2Gi"} and pvc.status.capacity == {"storage": "1Gi"}

    # The resizer grows the volume and writes the claim's status; the PV controller leaves the capacity to it.
    core.patch_persistent_volume("pv-growing", {"spec": {"capacity": {"storage": "2Gi"}}})
    assert core.read_persistent_volume("pv-growing").spec.capacity == {"storage": "2Gi"}
    condition = {"type": "FileSystemResizePending", "status": "True", "message": "waiting for the node"}
    core.patch_namespaced_persistent_volume_claim_status("growing", "default", {"status": {
        "conditions": [condition], "allocatedResources": {"storage": "2Gi"},
        "allocatedResourceStatuses": {"storage": "NodeResizePending"}}})
    status = core.read_namespaced_persistent_volume_claim("growing", "default").to_dict()["status"]
    assert status["capacity"] == {"storage": "1Gi"} and status["phase"] == "Bound"
    assert status["allocated_resources"] == {"storage": "2Gi"}
    assert status["allocated_resource_statuses"] == {"storage": "NodeResizePending"}
    assert [(c["type"], c["status"], c["message"]) for c in status["conditions"]] == [
        ("FileSystemResizePending", "True", "waiting for the node")]
    kubectl("patch", "pvc", "growing", "--subresource=status", "--type=merge", "-p",
            '{"status":{"capacity":{"storage":"2Gi"},"conditions":null,"allocatedResourceStatuses":null}}')
    pvc = json.loads(kubectl("get", "pvc", "growing", "-o", "json").stdout)
    assert pvc["status"] == {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "2Gi"},
                             "allocatedResources": {"storage": "2Gi"}}

    # Shrinking (to recover from a failed expansion) must stay above status.capacity.
    resize("growing", "3Gi")
    resize("growing", "2560Mi")
    too_small = resize("growing", "2Gi", check=False)
    assert ('PersistentVolumeClaim "growing" is invalid: spec.resources.requests.storage: Forbidden: field can not '
            "be less than status.capacity" in too_small.stderr), too_small.stderr
    with pytest.raises(ApiException) as invalid:
        core.patch_namespaced_persistent_volume_claim(
            "growing", "default", {"spec": {"resources": {"requests": {"storage": "1Gi"}}}})
    assert invalid.value.status == 422
    assert [c["field"] for c in json.loads(invalid.value.body)["details"]["causes"]] == [
        "spec.resources.requests.storage"]
    assert core.read_namespaced_persistent_volume_claim("growing", "default").status.capacity == {"storage": "2Gi"}


POD_MANIFESTS = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - {name: nginx, image: "nginx:1.27"}
status: {phase: Running}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
- addresses: [{ip: 10.0.0.5}]
  ports: [{port: 80}]
"""


def pod_manifest(name, *claims, node="node-1"):
    """A pod using the given claims, as kubectl takes it on stdin; scheduled to `node` (None: not scheduled)."""
    spec = {"containers": [{"name": "app", "image": "busybox:1.36"}],
            "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": claim}}
                        for i, claim in enumerate(claims)]}
    if node:
        spec["nodeName"] = node
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


@pytest.fixture
def kubectl_stdin(server, tmp_path):
    def run(stdin, *args, check=True):
        result = subprocess.run([KUBECTL, "--kubeconfig", server.kubeconfig_path, "--cache-dir",
                                 str(tmp_path / "kube-cache"), *args, "-f", "-"], input=stdin, capture_output=True,
                                text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result
    return run


def set_phase(kubectl, pod, phase):
    kubectl("patch", "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps({"status": {"phase": phase}}))


def pvc_state(kubectl, name):
    """(deletionTimestamp set, finalizers) of a claim, or None once it is gone."""
    result = kubectl("get", "pvc", name, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    meta = json.loads(result.stdout)["metadata"]
    return bool(meta.get("deletionTimestamp")), meta.get("finalizers")


@needs_kubectl
def test_kubectl_pods_and_endpoints(server, kubectl, kubectl_stdin):
    out = kubectl_stdin(POD_MANIFESTS, "create").stdout
    assert "pod/web created" in out and "endpoints/web created" in out
    listing = kubectl("get", "pods,endpoints", "-o", "name").stdout.split()
    assert listing == ["pod/web", "endpoints/web"]
    assert "web" in kubectl("get", "po", "-l", "app=web").stdout and "web" in kubectl("get", "ep").stdout
    pod = json.loads(kubectl("get", "pod", "web", "-o", "json").stdout)
    assert pod["status"] == {"phase": "Pending"}  # the status given on create is ignored
    assert pod["spec"]["restartPolicy"] == "Always"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    set_phase(kubectl, "web", "Running")
    assert kubectl("get", "pod", "web", "-o", "jsonpath={.status.phase}").stdout == "Running"
    endpoints = json.loads(kubectl("get", "endpoints", "web", "-o", "json").stdout)
    assert endpoints["kind"] == "Endpoints"
    assert endpoints["subsets"] == [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 80}]}]

    # Validation as the real server's: containers are required, each with a name and an image.
    bad = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {}})
    refused = kubectl_stdin(bad, "create", check=False)
    assert refused.returncode != 0
    assert 'The Pod "bad" is invalid: spec.containers: Required value' in refused.stderr, refused.stderr
    nameless = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
                           "spec": {"containers": [{"image": "busybox"}]}})
    assert "spec.containers[0].name: Required value" in kubectl_stdin(nameless, "create", check=False).stderr
    changed = kubectl("patch", "pod", "web", "--type=json", "-p",
                      '[{"op":"replace","path":"/spec/restartPolicy","value":"Never"}]', check=False)
    assert "pod updates may not change fields other than" in changed.stderr, changed.stderr
    kubectl("set", "image", "pod/web", "nginx=nginx:1.28")  # but the image may change
    kubectl("delete", "pod,endpoints", "web", "--timeout=10s")
    assert kubectl("get", "pods,endpoints", "-o", "name").stdout == ""


@needs_kubectl
def test_pvc_protection_waits_for_pods(server, kubectl, kubectl_stdin):
    """The PVC protection controller (podUsesPVC): a scheduled pod holds the claims its volumes name, whatever its
    phase, until it is gone; a Terminating pod still holds them (its kubelet has not unmounted them yet); a pod
    not scheduled holds nothing. Pods on a node are deleted gracefully (Terminating, then gone once the kubelet is
    done); unscheduled and finished ones at once."""
    for claim in ("data", "scratch", "shared", "loose"):
        kubectl_stdin(json.dumps(pvc_body(claim)), "create")
    kubectl_stdin(pod_manifest("app", "data", "shared"), "create")
    kubectl_stdin(pod_manifest("job", "scratch", "shared"), "create")
    kubectl_stdin(pod_manifest("unscheduled", "loose", node=None), "create")
    set_phase(kubectl, "app", "Running")
    set_phase(kubectl, "job", "Succeeded")

    # A claim a running pod uses stays, Terminating, after it is deleted, until the pod goes.
    kubectl("delete", "pvc", "data", "--wait=false")
    settled(server)
    assert pvc_state(kubectl, "data") == (True, ["kubernetes.io/pvc-protection"])
    kubectl("get", "pvc", "data")  # still listed
    server.faults.controllers(paused=True)  # the kubelet too: the pod stays Terminating
    kubectl("delete", "pod", "app", "--wait=false")
    pod = json.loads(kubectl("get", "pod", "app", "-o", "json").stdout)
    assert pod["metadata"]["deletionTimestamp"] and pod["metadata"]["deletionGracePeriodSeconds"] == 30
    server.faults.controllers(paused=False)
    settled(server)
    kubectl("wait", "--for=delete", "pvc/data", "--timeout=30s")
    assert pvc_state(kubectl, "data") is None

    # A finished pod holds its claims while it exists (it is deleted at once); an unscheduled one holds nothing.
    kubectl("delete", "pvc", "scratch", "shared", "loose", "--wait=false")
    settled(server)
    assert pvc_state(kubectl, "scratch") == (True, ["kubernetes.io/pvc-protection"])
    assert pvc_state(kubectl, "shared") == (True, ["kubernetes.io/pvc-protection"])
    assert pvc_state(kubectl, "loose") is None
    server.faults.controllers(paused=True)
    kubectl("delete", "pod", "job", "--wait=false")
    assert "job" not in kubectl("get", "pods", "-o", "name").stdout  # not Terminating: gone
    server.faults.controllers(paused=False)
    settled(server)
    assert pvc_state(kubectl, "scratch") is None and pvc_state(kubectl, "shared") is None

    # A claim's other finalizers still hold it once no pod does; a pod in another namespace never does.
    kept = pvc_body("kept")
    kept["metadata"]["finalizers"] = ["robin.example.com/keep"]
    kubectl_stdin(json.dumps(kept), "create")
    kubectl_stdin(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}), "create")
    kubectl_stdin(pod_manifest("elsewhere", "kept"), "create", "-n", "other")
    kubectl_stdin(pod_manifest("user", "kept"), "create")
    kubectl("delete", "pvc", "kept", "--wait=false")
    assert pvc_state(kubectl, "kept") == (True, ["robin.example.com/keep", "kubernetes.io/pvc-protection"])
    kubectl("delete", "pod", "user", "--timeout=30s")
    settled(server)
    assert pvc_state(kubectl, "kept") == (True, ["robin.example.com/keep"])
    kubectl("patch", "pvc", "kept", "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    assert pvc_state(kubectl, "kept") is None
    # Deleting a namespace deletes its claims once the pods using them have gone.
    kubectl_stdin(json.dumps(pvc_body("in-use")), "create", "-n", "other")
    kubectl_stdin(pod_manifest("holder", "in-use"), "create", "-n", "other")
    kubectl("delete", "namespace", "other", "--timeout=10s")
    assert "other" not in kubectl("get", "ns", "-o", "name").stdout
    assert server.store.tracker.pods_by_claim == {}


def test_storage_classes_events_and_leases(server, api_client, core):
    storage = k8s.StorageV1Api(api_client)
    storage.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                  "metadata": {"name": "sc"}, "provisioner": "robin.example.com"})
    assert [s.metadata.name for s in storage.list_storage_class().items] == ["sc"]

    event = core.create_namespaced_event("default", {
        "metadata": {"generateName": "claim."}, "involvedObject": {"kind": "PersistentVolumeClaim", "name": "x",
                                                                   "namespace": "default"},
        "reason": "Provisioning", "message": "hello", "type": "Normal"})
    assert event.metadata.name.startswith("claim.")
    found = core.list_namespaced_event("default", field_selector="involvedObject.name=x,reason=Provisioning")
    assert [e.message for e in found.items] == ["hello"]

    coordination = k8s.CoordinationV1Api(api_client)
    lease = coordination.create_namespaced_lease("kube-system", {
        "metadata": {"name": "robin-leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    lease.spec.holder_identity = "b"
    assert coordination.replace_namespaced_lease("robin-leader", "kube-system", lease).spec.holder_identity == "b"
    lease.spec.holder_identity = "c"  # a competing candidate with the old resourceVersion loses
    with pytest.raises(ApiException) as conflict:
        coordination.replace_namespaced_lease("robin-leader", "kube-system", lease)
    assert conflict.value.status == 409


def test_watch_bookmarks(server, core):
    rv = core.list_namespaced_persistent_volume_claim("default").metadata.resource_version
    seen = []
    w = k8s_watch.Watch()
    for event in w.stream(core.list_namespaced_persistent_volume_claim, "default", resource_version=rv,
                          allow_watch_bookmarks=True, timeout_seconds=10):
        seen.append(event["type"])
        if event["type"] == "BOOKMARK":
            assert int(event["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)
            w.stop()
    assert seen == ["BOOKMARK"]


def test_watch_from_compacted_resource_version_gets_410(server, core):
    rv = core.list_namespaced_persistent_volume_claim("default").metadata.resource_version
    core.create_namespaced_persistent_volume_claim("default", pvc_body("old"))
    server.faults.compact()
    with pytest.raises(ApiException) as expired:
        for _ in k8s_watch.Watch().stream(core.list_namespaced_persistent_volume_claim, "default",
                                          resource_version=rv, timeout_seconds=5):
            pass
    assert expired.value.status == 410
    # The raw stream: HTTP 200, then an ERROR event carrying a 410 Status, then the end.
    status, _, body = raw(server, "GET", f"/api/v1/namespaces/default/persistentvolumeclaims?watch=true"
                                         f"&resourceVersion={rv}")
    event = first_event(body)
    assert status == 200 and event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    # Continue tokens from before a compaction are too old as well.
    core.create_namespaced_persistent_volume_claim("default", pvc_body("old2"))
    page = core.list_namespaced_persistent_volume_claim("default", limit=1)
    core.create_namespaced_persistent_volume_claim("default", pvc_body("old3"))
    server.faults.compact()  # the page's resourceVersion is now older than the oldest one kept
    with pytest.raises(ApiException) as expired_continue:
        core.list_namespaced_persistent_volume_claim("default", limit=1, _continue=page.metadata._continue)
    assert expired_continue.value.status == 410
    # The history is bounded: a small one forgets old resourceVersions by itself.
    with KubeApiServer.running(history_size=3) as small:
        status, _, listing = raw(small, "GET", "/api/v1/namespaces")
        for i in range(4):
            raw(small, "POST", "/api/v1/namespaces", {"metadata": {"name": f"n{i}"}})
        _, _, body = raw(small, "GET", f"/api/v1/namespaces?watch=1&resourceVersion="
                                       f"{listing['metadata']['resourceVersion']}")
        assert first_event(body)["object"]["code"] == 410


def test_injected_500s_and_429s(server, core):
    server.faults.fail_requests(500, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            core.list_namespace()
        assert failed.value.status == 500 and json.loads(failed.value.body)["reason"] == "InternalError"
    assert core.list_namespace().items
    server.faults.fail_requests(500, seconds=0.3)
    with pytest.raises(ApiException):
        core.list_namespace()
    eventually(lambda: _succeeds(core.list_namespace), what="the 500s to stop")
    # 429 carries Retry-After, which urllib3 (under the Python client) honours by retrying by itself.
    failed_before = server.faults.failed
    server.faults.fail_requests(429, count=2, retry_after=0)
    assert core.list_namespace().items
    assert server.faults.failed == failed_before + 2
    server.faults.fail_requests(503, path_contains="persistentvolumes", method="GET")
    assert core.list_namespace().items is not None
    with pytest.raises(ApiException) as unavailable:
        core.list_persistent_volume()
    assert unavailable.value.status == 503
    server.faults.clear()
    assert core.list_persistent_volume().items == []


def _succeeds(call) -> bool:
    try:
        call()
        return True
    except ApiException:
        return False


def test_fault_admin_endpoint_and_auth(server):
    status, _, _ = raw(server, "POST", "/_faults/fail", {"status": 429, "count": 1, "retryAfter": 3})
    assert status == 200
    status, headers, body = raw(server, "GET", "/api/v1/namespaces")
    assert status == 429 and headers["Retry-After"] == "3" and body["reason"] == "TooManyRequests"
    assert raw(server, "GET", "/api/v1/namespaces")[0] == 200
    status, _, body = raw(server, "POST", "/_faults/compact", {})
    assert status == 200 and int(body["compactedResourceVersion"]) > 0
    assert raw(server, "POST", "/_faults/drop-watches", {"abruptly": True})[0] == 200
    assert raw(server, "GET", "/api/v1/namespaces", token="wrong")[0] == 401
    assert raw(server, "GET", "/api/v1/namespaces", token=False)[0] == 200  # anonymous, as kubectl over http
    assert raw(server, "GET", "/api/v1/nonsense")[0] == 404
    assert raw(server, "PATCH", "/api/v1/namespaces/default", {}, content_type="application/apply-patch+yaml")[0] \
        == 415


def _protobuf_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (its size and key below 128, as in these tests)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def _protobuf_body(api_version: str, kind: str, raw_object: bytes) -> bytes:
    type_meta = _protobuf_field(1, api_version.encode()) + _protobuf_field(2, kind.encode())
    return b"k8s\x00" + _protobuf_field(1, type_meta) + _protobuf_field(2, raw_object)


def test_media_types(server):
    """api-concepts.md, "Alternate representations of resources": a server reads JSON, YAML and (for built-in
    kinds) protobuf bodies and answers 415 Unsupported Media Type to others; patches take their own media types."""
    protobuf = "application/vnd.kubernetes.protobuf"
    meta = _protobuf_field(1, b"pb")  # ObjectMeta.name
    status, _, created = raw(server, "POST", "/api/v1/namespaces", _protobuf_body("v1", "Namespace", _protobuf_field(
        1, meta + _protobuf_field(8, b""))), content_type=protobuf)  # a zero creationTimestamp, as Go sends it
    assert status == 201 and created["metadata"]["name"] == "pb" and created["status"] == {"phase": "Active"}
    status, _, body = raw(server, "POST", "/api/v1/namespaces/default/pods",
                          _protobuf_body("v1", "Pod", _protobuf_field(1, meta)), content_type=protobuf)
    assert (status, body["reason"]) == (415, "UnsupportedMediaType") and "send it as application/json" in \
        body["message"]
    status, _, body = raw(server, "POST", "/api/v1/namespaces", b"not protobuf", content_type=protobuf)
    assert (status, body["reason"]) == (400, "BadRequest")
    status, _, body = raw(server, "POST", "/api/v1/namespaces", b"name=x", content_type="text/plain")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType") and "application/json" in body["message"]
    status, _, body = raw(server, "POST", "/api/v1/namespaces", b"metadata: {name: from-yaml}",
                          content_type="application/yaml")
    assert status == 201 and body["metadata"]["name"] == "from-yaml"
    status, _, body = raw(server, "PATCH", "/api/v1/namespaces/pb", {"metadata": {"labels": {"a": "b"}}})
    assert (status, body["reason"]) == (415, "UnsupportedMediaType") and "merge-patch+json" in body["message"]
    assert [ns for ns in server.store.objects[("", "namespaces")]] == [
        ("", name) for name in ("default", "kube-system", "kube-public", "kube-node-lease", "pb", "from-yaml")]


@needs_kubectl
def test_kubectl_typed_create_commands(server, kubectl, tmp_path):
    """kubectl's create subcommands send protobuf (issue: `kubectl create namespace` failed with a 400)."""
    assert kubectl("create", "namespace", "apps").stdout.strip() == "namespace/apps created"
    (tmp_path / "password").write_text("s3cret")
    kubectl("create", "secret", "generic", "creds", "-n", "apps", "--from-literal=user=admin",
            f"--from-file={tmp_path / 'password'}", "--from-literal=empty=")
    (tmp_path / "app.conf").write_text("key = value\n")
    (tmp_path / "logo.bin").write_bytes(b"\xff\x00\xfe")
    kubectl("create", "configmap", "settings", "-n", "apps", f"--from-file={tmp_path / 'app.conf'}",
            f"--from-file={tmp_path / 'logo.bin'}", "--from-literal=blank=")
    secret = json.loads(kubectl("get", "secret", "creds", "-n", "apps", "-o", "json").stdout)
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"user": "YWRtaW4=", "password": "czNjcmV0", "empty": ""}
    config_map = json.loads(kubectl("get", "configmap", "settings", "-n", "apps", "-o", "json").stdout)
    assert config_map["data"] == {"app.conf": "key = value\n", "blank": ""}
    assert config_map["binaryData"] == {"logo.bin": "/wD+"}
    assert kubectl("get", "ns", "apps", "-o", "jsonpath={.status.phase}").stdout == "Active"
    # Server-side apply is refused in words kubectl passes on, not answered as a merge patch would be.
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: "
                                      "apps}\ndata: {a: b}\n")
    refused = kubectl("apply", "--server-side", "-f", str(tmp_path / "cm.yaml"), check=False)
    assert refused.returncode != 0 and "server-side apply" in refused.stderr
    assert "a" not in json.loads(kubectl("get", "cm", "settings", "-n", "apps", "-o", "json").stdout)["data"]
    kubectl("delete", "namespace", "apps", "--timeout=30s")
    assert server.store.objects[("", "secrets")] == {} and server.store.objects[("", "configmaps")] == {}


def test_secret_and_config_map_validation(server, core):
    """The Secret and ConfigMap strategies: stringData is write-only and merged into data, keys are config keys,
    an `immutable` object keeps its data, a Secret keeps its type."""
    def secret(**fields):
        return {"metadata": {"name": "s"}, **fields}

    created = core.create_namespaced_secret("default", secret(data={"a": "YQ=="}, stringData={"b": "bee", "a": "A"}))
    assert created.data == {"a": "QQ==", "b": "YmVl"} and created.type == "Opaque" and created.string_data is None
    status, _, body = raw(server, "POST", "/api/v1/namespaces/default/secrets",
                          {"metadata": {"name": "bad"}, "data": {"a": "not base64!"}})
    assert (status, body["reason"]) == (400, "BadRequest")
    status, _, body = raw(server, "POST", "/api/v1/namespaces/default/configmaps",
                          {"metadata": {"name": "bad"}, "data": {"a/b": "x", "c": "y"}, "binaryData": {"c": ""}})
    assert (status, body["reason"]) == (422, "Invalid")
    assert sorted(c["field"] for c in body["details"]["causes"]) == ["data[a/b]", "data[c]"]
    status, _, body = raw(server, "PATCH", "/api/v1/namespaces/default/secrets/s", {"type": "kubernetes.io/tls"},
                          content_type="application/merge-patch+json")
    assert (status, body["details"]["causes"][0]["field"]) == (422, "type")
    core.patch_namespaced_secret("s", "default", {"immutable": True})
    for change in ({"data": {"a": "Yg=="}}, {"immutable": False}):
        with pytest.raises(ApiException) as refused:
            core.patch_namespaced_secret("s", "default", change)
        assert refused.value.status == 422
    assert core.read_namespaced_secret("s", "default").data == {"a": "QQ==", "b": "YmVl"}
    assert set(server.store.objects[("", "secrets")]) == {("default", "s")}
    assert server.store.objects[("", "configmaps")] == {}


def test_rbac_for_service_account_tokens(server, api_client, core, tmp_path):
    """reference/access-authn-authz/rbac.md: a ServiceAccount may do what the rules of the Roles and ClusterRoles
    bound to it allow; a ClusterRoleBinding grants everywhere, a RoleBinding only in its namespace; resources are
    named with their subresource (persistentvolumeclaims/status); anything else is a 403 naming user, verb,
    resource and scope. The server's own token (system:masters) may do everything."""
    rbac_api = k8s.RbacAuthorizationV1Api(api_client)
    core.create_namespace({"metadata": {"name": "storage"}})
    core.create_namespaced_service_account("storage", {"metadata": {"name": "prov"}})
    subject = [{"kind": "ServiceAccount", "name": "prov", "namespace": "storage"}]
    rbac_api.create_cluster_role({"metadata": {"name": "prov"}, "rules": [
        {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims/status"], "verbs": ["patch"]}]})
    rbac_api.create_cluster_role_binding({"metadata": {"name": "prov"}, "subjects": subject, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "prov"}})
    rbac_api.create_namespaced_role("storage", {"metadata": {"name": "leader"}, "rules": [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]})
    rbac_api.create_namespaced_role_binding("storage", {"metadata": {"name": "leader"}, "subjects": subject,
                                                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                                    "kind": "Role", "name": "leader"}})
    core.create_persistent_volume(pv_body("pv"))
    core.create_namespaced_persistent_volume_claim("default", pvc_body("claim"))

    token = server.service_account_token("storage", "prov")
    kubeconfig = server.write_kubeconfig(str(tmp_path / "sa-kubeconfig"), token=token)
    sa_client = k8s_config.new_client_from_config(config_file=kubeconfig)
    try:
        sa_core, sa_coordination = k8s.CoreV1Api(sa_client), k8s.CoordinationV1Api(sa_client)
        assert [pv.metadata.name for pv in sa_core.list_persistent_volume().items] == ["pv"]
        sa_core.patch_namespaced_persistent_volume_claim_status("claim", "default",
                                                                {"status": {"allocatedResources": {"storage": "1Gi"}}})
        lease = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "me"}}
        sa_coordination.create_namespaced_lease("storage", lease)

        def refused(call, *args):
            with pytest.raises(ApiException) as error:
                call(*args)
            assert error.value.status == 403
            return json.loads(error.value.body)["message"]

        assert refused(sa_core.create_persistent_volume, pv_body("more")) == (
            'persistentvolumes is forbidden: User "system:serviceaccount:storage:prov" cannot create resource '
            '"persistentvolumes" in API group "" at the cluster scope')
        assert refused(sa_core.delete_persistent_volume, "pv") == (
            'persistentvolumes "pv" is forbidden: User "system:serviceaccount:storage:prov" cannot delete resource '
            '"persistentvolumes" in API group "" at the cluster scope')
        assert 'cannot patch resource "persistentvolumeclaims" in API group "" in the namespace "default"' in refused(
            sa_core.patch_namespaced_persistent_volume_claim, "claim", "default", {"metadata": {"labels": {"c": "d"}}})
        assert 'in the namespace "default"' in refused(sa_coordination.create_namespaced_lease, "default", lease)
        refused(sa_core.list_namespaced_secret, "storage")
        assert sa_core.get_api_resources().group_version == "v1"  # discovery is open to every authenticated user
        assert raw(server, "GET", "/_faults", token=token)[0] == 403
        assert raw(server, "GET", "/api/v1/persistentvolumes", token="not-a-token")[0] == 401
    finally:
        sa_client.close()
    claim = core.read_namespaced_persistent_volume_claim("claim", "default")
    assert claim.status.allocated_resources == {"storage": "1Gi"} and claim.metadata.labels is None
    assert sorted(server.store.objects[PVS.key]) == [("", "pv")]
    assert sorted(server.store.objects[("coordination.k8s.io", "leases")]) == [("storage", "leader")]


def _watch_in_thread(core):
    """Streams PVC events of `default` into a queue from a thread; returns (watch, queue, thread, errors)."""
    events, errors = queue.Queue(), []
    w = k8s_watch.Watch()

    def consume():
        try:
            for event in w.stream(core.list_namespaced_persistent_volume_claim, "default"):
                events.put((event["type"], event["object"].metadata.name))
        except Exception as e:  # noqa: BLE001 - handed to the test
            errors.append(e)
        finally:
            events.put(None)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return w, events, thread, errors


def test_dropped_watch_is_resumed_by_the_client(server, core):
    w, events, thread, errors = _watch_in_thread(core)
    try:
        core.create_namespaced_persistent_volume_claim("default", pvc_body("one"))
        assert events.get(timeout=10) == ("ADDED", "one")
        requests = server.watch_requests
        server.faults.drop_watches()  # ends cleanly, like a server-side timeout: the client watches again
        eventually(lambda: server.watch_requests > requests, what="the client to watch again")
        core.create_namespaced_persistent_volume_claim("default", pvc_body("two"))
        assert events.get(timeout=10) == ("ADDED", "two")  # nothing lost, nothing repeated
        assert not errors
    finally:
        w.stop()
        server.faults.drop_watches()
        thread.join(timeout=10)


def test_abruptly_dropped_watch_breaks_the_stream(server, core):
    w, events, thread, errors = _watch_in_thread(core)
    try:
        core.create_namespaced_persistent_volume_claim("default", pvc_body("one"))
        assert events.get(timeout=10) == ("ADDED", "one")
        server.faults.drop_watches(abruptly=True)
        assert events.get(timeout=10) is None
        thread.join(timeout=10)
        assert errors, "the client should see the broken connection"
    finally:
        w.stop()
        thread.join(timeout=10)


def _watched(server, path: str) -> list[tuple[str, str]]:
    """(type, name) of every event a watch at `path` (which ends it with timeoutSeconds) received."""
    _, _, body = raw(server, "GET", path)
    lines = body.splitlines() if isinstance(body, str) else [json.dumps(body)]
    return [(event["type"], event["object"]["metadata"]["name"]) for event in map(json.loads, lines)]


def test_held_watches_lag_behind_until_released(server, core):
    rv = core.list_namespaced_persistent_volume_claim("default").metadata.resource_version
    core.create_namespaced_persistent_volume_claim("default", pvc_body("one"))
    server.faults.hold_watches(PVCS)
    core.create_namespaced_persistent_volume_claim("default", pvc_body("two"))
    core.create_persistent_volume(k8s.V1PersistentVolume(metadata=k8s.V1ObjectMeta(name="pv"), spec={
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp"}}))
    claims = f"/api/v1/namespaces/default/persistentvolumeclaims?watch=true&resourceVersion={rv}&timeoutSeconds=1"
    assert _watched(server, claims) == [("ADDED", "one")]  # the server ends the watch, having held "two" back
    # other resources' watches are not held (the PV controller's update of the PV follows its creation)
    assert _watched(server, f"/api/v1/persistentvolumes?watch=true&resourceVersion={rv}&timeoutSeconds=1")[0] == (
        "ADDED", "pv")
    server.faults.release_watches()
    assert _watched(server, claims) == [("ADDED", "one"), ("ADDED", "two")]


def test_server_stops_with_open_watches():
    with KubeApiServer.running() as server:
        api_client = k8s_config.new_client_from_config(config_file=server.kubeconfig_path)
        core = k8s.CoreV1Api(api_client)
        w, events, thread, _ = _watch_in_thread(core)
        eventually(lambda: server.watch_requests > 0, what="the watch")
        kubeconfig = server.kubeconfig_path
    assert not os.path.exists(kubeconfig)
    w.stop()
    thread.join(timeout=10)
    api_client.close()
    assert not thread.is_alive()


def _leaves(value, path=()):
    """Every (path, value) of a JSON document, containers included."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _leaves(item, (*path, key))


def _replaced(document, path, value):
    """A copy of `document` with the value at `path` replaced by `value` (or removed: _REMOVED)."""
    changed = json.loads(json.dumps(document))
    if not path:
        return value
    parent = changed
    for key in path[:-1]:
        parent = parent[key]
    if value is _REMOVED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return changed


_REMOVED = object()
_WRONG_VALUES = (_REMOVED, None, 0, 1.5, True, "text", "ReadWriteOnce", [], ["x"], [1], {}, {"x": 1})


def test_compiled_schema_check_accepts_only_what_jsonschema_accepts():
    """The compiled schemas (schema_compiler) are the fast path of every write: an object they accept goes
    through without jsonschema. Checked against jsonschema itself on the objects robin writes, and on each of them
    with every field, one at a time, removed or replaced by a value of each JSON type: whatever the compiled check
    accepts, jsonschema accepts too (and what jsonschema refuses still gets its errors, from jsonschema)."""
    from tests.kube_apiserver import schemas
    from tests.kube_apiserver.resources import RESOURCES

    by_kind = {rt.kind: rt for rt in RESOURCES}
    claim = {**pvc_body("c", storage="64Mi", storageClassName="fast", volumeMode="Filesystem"),
             "metadata": {"name": "c", "namespace": "ns", "uid": "u", "annotations": {"a": "b"},
                          "finalizers": ["robin.io/provisioning"], "labels": {"l": "v"}},
             "status": {"phase": "Bound", "capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
                        "conditions": [{"type": "Resizing", "status": "True"}]}}
    volume = pv_body("pvc-u", "ns", "c", storage="64Mi")
    volume["spec"]["csi"].update(fsType="ext4", volumeAttributes={"pool": "rbd"},
                                 nodeStageSecretRef={"name": "s", "namespace": "ns"})
    volume["spec"].update(persistentVolumeReclaimPolicy="Delete", mountOptions=["discard"])
    documents = {
        "PersistentVolumeClaim": claim, "PersistentVolume": volume,
        "Event": {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"},
                  "involvedObject": {"kind": "PersistentVolumeClaim", "name": "c", "uid": "u"}, "type": "Normal",
                  "reason": "ProvisioningSucceeded", "message": "made", "count": 1, "source": {"component": "r"},
                  "firstTimestamp": "2026-01-01T00:00:00Z"},
        "StorageClass": {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
                         "provisioner": "robin.io/rbd", "parameters": {"pool": "rbd"}, "allowVolumeExpansion": True},
        "Lease": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                  "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "leaseTransitions": 2}},
        "Pod": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                         "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]}},
    }
    compared = 0
    for kind, document in documents.items():
        rt = by_kind[kind]
        name = schemas.definition_name(rt)
        check, validator = schemas._compiler().definition(name), schemas._validator(name)
        normalized = schemas.decode(rt, document)
        assert check(normalized), f"{kind}: a valid object must take the fast path"
        for path, _ in list(_leaves(normalized)):
            for wrong in _WRONG_VALUES:
                if not path and wrong is _REMOVED:
                    continue
                candidate = _replaced(normalized, path, wrong)
                if check(candidate):
                    errors = list(validator.iter_errors(candidate))
                    assert errors == [], f"{kind} {path} = {wrong!r}: accepted, but jsonschema says {errors[0]}"
                compared += 1
    assert compared > 1000
