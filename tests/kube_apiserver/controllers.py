"""The controllers Kubernetes itself runs for these kinds: kube-controller-manager's PV controller (binding, and
the annotations that ask a provisioner for a volume), the PVC/PV protection finalizers (a claim stays while a pod
that is not done uses it), and namespace deletion.

As in a real cluster they run after the write that triggers them, never inside it: `ControllerManager`, a thread
of the server, takes the work the writes left, and for each claim, volume or namespace reads what it needs, then
commits its own writes, each of which meets a 409 (and the work is queued again) if the object changed since it was
read. Its knobs (`Faults.controllers`) delay every controller write or pause the controllers altogether, so a test
can see what a client sees between a write and its consequences.

So that a write costs work proportional to what it touches, not to the number of objects stored, `Tracker` is told
of every commit: it keeps the indexes that find related objects (the PVs whose claimRef names a claim, the claims
naming a volume, the pods using a claim) and collects what the next pass must look at. Everything else stays at rest
because nothing it depends on changed."""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

from kubernetes.utils import parse_quantity

from .kinds import PV_PROTECTION, PVC_PROTECTION, claim_class
from .resources import NAMESPACES, PODS, PVCS, PVS, RESOURCES, STORAGE_CLASSES

STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
SELECTED_NODE = "volume.kubernetes.io/selected-node"


@dataclass
class Work:
    """What the controllers must look at: claims by (namespace, name), the rest by name (dicts as ordered sets).
    A class names the claims of that class; a namespace is there only while it is terminating."""
    claims: dict = field(default_factory=dict)
    volumes: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    namespaces: dict = field(default_factory=dict)
    pods: dict = field(default_factory=dict)  # terminating ones, for the kubelet

    def __bool__(self) -> bool:
        return bool(self.claims or self.volumes or self.classes or self.namespaces or self.pods)


def _claim_ref_key(pv: dict | None) -> tuple[str, str] | None:
    ref = ((pv or {}).get("spec") or {}).get("claimRef")
    return (ref.get("namespace", ""), ref.get("name", "")) if ref else None


def _volume_name(pvc: dict | None) -> str | None:
    return ((pvc or {}).get("spec") or {}).get("volumeName") or None


def pod_claims(pod: dict | None) -> set[tuple[str, str]]:
    """The claims (namespace, name) a pod holds, as the PVC protection controller counts them (podUsesPVC): those
    its volumes name, once it is scheduled (spec.nodeName), whatever its phase, until it is gone (a Terminating
    pod still holds them: its kubelet has not unmounted them yet)."""
    if pod is None or not (pod.get("spec") or {}).get("nodeName"):
        return set()
    namespace = pod["metadata"].get("namespace", "")
    return {(namespace, volume["persistentVolumeClaim"]["claimName"])
            for volume in (pod.get("spec") or {}).get("volumes") or []
            if isinstance(volume, dict) and (volume.get("persistentVolumeClaim") or {}).get("claimName")}


def _reindex(index: dict, old_value, new_value, member) -> None:
    if old_value == new_value:
        return
    members = index.get(old_value) if old_value is not None else None
    if members is not None:
        members.pop(member, None)
        if not members:
            del index[old_value]
    if new_value is not None:
        index.setdefault(new_value, {})[member] = None


class Tracker:
    """Indexes over the store's PVCs and PVs, and the work the writes since the controllers last ran left them.
    `committed` is called by the store, lock held, for every object stored or removed."""

    def __init__(self, objects: dict):
        self.objects = objects  # the store's, by resource key
        self.work = Work()
        # Creation order of claims and volumes, which is the store's (dict) order: visiting them in it, where several
        # claims want one volume or several volumes name one claim, the same one wins as in a pass over everything.
        self.claim_order: dict[tuple[str, str], int] = {}
        self.volume_order: dict[str, int] = {}
        self.pvs_by_claim: dict[tuple[str, str], dict[str, None]] = {}  # claimRef (namespace, name) -> PV names
        self.pvcs_by_volume: dict[str, dict[tuple[str, str], None]] = {}  # spec.volumeName -> PVC keys
        self.pods_by_claim: dict[tuple[str, str], dict[tuple[str, str], None]] = {}  # pod_claims -> pod keys

    def committed(self, rt, key: tuple[str, str], previous: dict | None, stored: dict | None, rv: int) -> None:
        work = self.work
        if rt is PVCS:
            _track(self.claim_order, key, previous, stored, rv)
            _reindex(self.pvcs_by_volume, _volume_name(previous), _volume_name(stored), key)
            work.claims[key] = None
            work.volumes.update(self.pvs_by_claim.get(key, {}))  # their phase follows the claim
        elif rt is PVS:
            name = key[1]
            _track(self.volume_order, name, previous, stored, rv)
            _reindex(self.pvs_by_claim, _claim_ref_key(previous), _claim_ref_key(stored), name)
            work.volumes[name] = None
            # The claims it names, or named, and those naming it, may bind to it or lose it.
            for claim in (_claim_ref_key(previous), _claim_ref_key(stored)):
                if claim is not None:
                    work.claims[claim] = None
            work.claims.update(self.pvcs_by_volume.get(name, {}))
        elif rt is PODS:
            # Only the claims the pod starts or stops holding may change: their protection is looked at again.
            old_claims, new_claims = pod_claims(previous), pod_claims(stored)
            for claim in old_claims - new_claims:
                _reindex(self.pods_by_claim, claim, None, key)
            for claim in new_claims - old_claims:
                _reindex(self.pods_by_claim, None, claim, key)
            work.claims.update(dict.fromkeys(old_claims ^ new_claims))
            if stored is not None and stored["metadata"].get("deletionTimestamp"):
                work.pods[key] = None
        elif rt is STORAGE_CLASSES:
            work.classes[key[1]] = None
        elif rt is NAMESPACES:
            work.namespaces[key[1]] = None
        if rt.namespaced and _terminating(self.objects, key[0]):
            work.namespaces[key[0]] = None  # it goes once its last object has gone

    def in_store_order(self, order: dict, members) -> list:
        """The members that still exist, in the order of the store."""
        return sorted((m for m in members if m in order), key=order.__getitem__)


def _track(order: dict, member, previous: dict | None, stored: dict | None, rv: int) -> None:
    if previous is None:
        order[member] = rv
    elif stored is None:
        del order[member]


def _terminating(objects: dict, namespace: str) -> bool:
    ns = objects[NAMESPACES.key].get(("", namespace))
    return ns is not None and bool(ns["metadata"].get("deletionTimestamp"))


class _Writes:
    """What one controller sync sees of the store (the live objects and indexes, read under the store's lock) and
    the writes it decided on, committed afterwards by `ControllerManager`."""

    def __init__(self, store):
        self.objects, self.tracker, self.volume_deleter = store.objects, store.tracker, store.volume_deleter
        # (resource type, object as read, new object or None to delete it, what to do first or None)
        self.planned: list[tuple] = []

    def save(self, rt, old: dict, new: dict) -> None:
        self.planned.append((rt, old, new, None))

    def mark_deleted(self, rt, obj: dict, before=None) -> None:
        self.planned.append((rt, obj, None, before))


class ControllerManager:
    """Runs the controllers in a thread of their own, after the writes. Knobs (set through `Faults.controllers`):
    `delay` seconds between a controller's reads and its writes, `paused` (no controller runs until resumed)."""

    def __init__(self, store):
        self.store = store
        self.delay = 0.0
        self.paused = False
        self.running = False
        self.holding = False  # a controller has read and waits (`delay`) to write
        self.conflicts = 0  # controller writes that met a 409, as a real controller's would
        self._thread = threading.Thread(target=self._loop, name="kube-controller-manager", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def configure(self, delay: float | None = None, paused: bool | None = None) -> None:
        with self.store.lock:
            if delay is not None:
                self.delay = float(delay)
            if paused is not None:
                self.paused = bool(paused)
            self.store.changed.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Waits until the controllers have nothing left to do (or are paused); False if `timeout` ran out."""
        store = self.store
        with store.lock:
            return store.changed.wait_for(lambda: self.paused or store.closed or (
                not store.tracker.work and not self.running), timeout)

    def _loop(self) -> None:
        store = self.store
        while True:
            with store.lock:
                while not store.closed and (self.paused or not store.tracker.work):
                    store.changed.wait(1.0)
                if store.closed:
                    return
                work, store.tracker.work = store.tracker.work, Work()
                units = _units(store, work)
                self.running = True
            try:
                for i, unit in enumerate(units):
                    if self.paused:
                        with store.lock:
                            for field_name, key, _ in units[i:]:
                                _requeue(store, field_name, key)
                        break
                    self._sync(unit)
            finally:
                with store.lock:
                    self.running = False
                    store.changed.notify_all()

    def _sync(self, unit) -> None:
        store = self.store
        field_name, key, sync = unit
        with store.lock:
            writes = _Writes(store)
            sync(writes, key)
        if not writes.planned:
            return
        with store.lock:
            if self.delay:
                # Waiting releases the lock: clients' writes may come in between (shortening the delay ends it).
                self.holding = True
                started = time.monotonic()
                store.changed.wait_for(lambda: store.closed or time.monotonic() >= started + self.delay,
                                       timeout=self.delay)
                self.holding = False
            for rt, old, new, before in writes.planned:
                meta = old["metadata"]
                current = store.objects[rt.key].get((meta.get("namespace", ""), meta["name"]))
                if current is None or current["metadata"]["resourceVersion"] != meta["resourceVersion"]:
                    self.conflicts += 1  # a 409: the controller looks again at what it was syncing
                    _requeue(store, field_name, key)
                    return
                if before is not None:
                    before()
                store.actor = CONTROLLER_NAMES[sync]
                try:
                    if new is None:
                        store.mark_deleted(rt, current)
                    else:
                        store.save(rt, current, new)
                finally:
                    store.actor = "api"


def _requeue(store, field_name: str, key) -> None:
    getattr(store.tracker.work, field_name)[key] = None
    store.changed.notify_all()


def _units(store, work: Work) -> list:
    """The syncs one pass makes, in the order of a pass over everything (protection, claims, volumes, namespaces),
    so that the writes, and the watch events, come out in the same order as with one: (Work field, key, sync)."""
    tracker = store.tracker
    claims = dict(work.claims)
    if work.classes:
        claims.update((key, None) for key, pvc in store.objects[PVCS.key].items()
                      if pvc["spec"].get("storageClassName") in work.classes)
    claims = tracker.in_store_order(tracker.claim_order, claims)
    volumes = tracker.in_store_order(tracker.volume_order, work.volumes)
    return ([("claims", key, _unprotect_claim) for key in claims]
            + [("volumes", name, _unprotect_volume) for name in volumes]
            + [("claims", key, _sync_claim) for key in claims]
            + [("volumes", name, _sync_volume) for name in volumes]
            + [("namespaces", name, _sync_namespace) for name in work.namespaces]
            + [("pods", key, _finish_pod) for key in work.pods])


# --- protection ------------------------------------------------------------------------------------------------

def _unprotect_claim(store, key: tuple[str, str]) -> None:
    _unprotect(store, PVCS, key, PVC_PROTECTION)


def _unprotect_volume(store, name: str) -> None:
    _unprotect(store, PVS, ("", name), PV_PROTECTION)


def _unprotect(store, rt, key: tuple[str, str], finalizer: str) -> None:
    """Removes kubernetes.io/pvc-protection from a deleted PVC no pod holds (see `pod_claims`) and
    kubernetes.io/pv-protection from a deleted PV that is not Bound."""
    obj = store.objects[rt.key].get(key)
    if obj is None:
        return
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or finalizer not in (meta.get("finalizers") or []):
        return
    if rt is PVS and obj.get("status", {}).get("phase") == "Bound":
        return
    if rt is PVCS and store.tracker.pods_by_claim.get(key):
        return
    new = copy.deepcopy(obj)
    new["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != finalizer]
    store.save(rt, obj, new)


# --- the PV controller ----------------------------------------------------------------------------------------

def _claim_ref_names(pv: dict, pvc: dict) -> bool:
    ref = (pv.get("spec") or {}).get("claimRef")
    meta = pvc["metadata"]
    return bool(ref) and ref.get("namespace") == meta["namespace"] and ref.get("name") == meta["name"] and (
        not ref.get("uid") or ref["uid"] == meta["uid"])


def _prebound_volume(store, pvc: dict) -> dict | None:
    """The first (in store order) volume not being deleted whose claimRef names the claim."""
    tracker, pvs = store.tracker, store.objects[PVS.key]
    meta = pvc["metadata"]
    names = tracker.pvs_by_claim.get((meta["namespace"], meta["name"]), {})
    for name in tracker.in_store_order(tracker.volume_order, names):
        pv = pvs[("", name)]
        if _claim_ref_names(pv, pvc) and not pv["metadata"].get("deletionTimestamp"):
            return pv
    return None


def _sync_claim(store, key: tuple[str, str]) -> None:
    """The claim side of the binding part of kube-controller-manager's PV controller: a PVC and the PV naming it
    (by the PVC's spec.volumeName or the PV's spec.claimRef) are bound; phases Pending/Bound/Lost. A claim left
    without a volume asks its class's provisioner for one."""
    pvc = store.objects[PVCS.key].get(key)
    if pvc is None:
        return
    volume = pvc["spec"].get("volumeName")
    pv = store.objects[PVS.key].get(("", volume)) if volume else _prebound_volume(store, pvc)
    if pv is None:
        if volume and pvc["status"].get("phase") == "Bound":
            new = copy.deepcopy(pvc)
            new["status"]["phase"] = "Lost"
            store.save(PVCS, pvc, new)
        elif not volume:
            _ask_provisioner(store, pvc)
        return
    ref = pv["spec"].get("claimRef")
    if ref and not _claim_ref_names(pv, pvc):
        return  # the volume belongs to another claim: stay Pending
    if pvc["status"].get("phase") != "Bound" and _mismatch(pv, pvc, by_claim=bool(volume)):
        return  # stays Pending until the volume fits (a real cluster also records a VolumeMismatch event)
    _bind(store, pv, pvc)


def _mismatch(pv: dict, pvc: dict, by_claim: bool) -> str | None:
    """Why the volume cannot satisfy the claim, or None: too small, another volume mode, access modes the volume
    lacks and, for a volume the claim names (checkVolumeSatisfyClaim; one that names the claim is bound whatever
    its class, as findMatchingVolume does), another class."""
    pv_spec, pvc_spec = pv["spec"], pvc["spec"]
    requested = ((pvc_spec.get("resources") or {}).get("requests") or {}).get("storage")
    if parse_quantity((pv_spec.get("capacity") or {}).get("storage") or 0) < parse_quantity(requested or 0):
        return "requested PV is too small"
    if by_claim and (pv_spec.get("storageClassName") or "") != claim_class(pvc):
        return "storageClassName does not match"
    if (pv_spec.get("volumeMode") or "Filesystem") != (pvc_spec.get("volumeMode") or "Filesystem"):
        return "incompatible volumeMode"
    if not set(pvc_spec.get("accessModes") or []) <= set(pv_spec.get("accessModes") or []):
        return "incompatible accessMode"
    return None


def _changed(obj: dict, *parts: str) -> dict:
    """A copy of `obj` to change: its metadata and the top-level `parts` (spec, status) copied one level deep,
    everything below shared with `obj`. Stored objects are never changed in place (see Store), so the new one may
    share what it does not change."""
    new = {**obj, "metadata": dict(obj["metadata"])}
    for part in parts:
        new[part] = dict(obj.get(part) or {})
    return new


def _bind(store, pv: dict, pvc: dict) -> None:
    ref = pv["spec"].get("claimRef")
    new_pv = _changed(pv, "spec", "status")
    if not ref or not ref.get("uid"):
        new_pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": pvc["metadata"]["namespace"],
                                      "name": pvc["metadata"]["name"], "uid": pvc["metadata"]["uid"],
                                      "apiVersion": "v1", "resourceVersion": pvc["metadata"]["resourceVersion"]}
    new_pv["status"]["phase"] = "Bound"
    store.save(PVS, pv, new_pv)
    new_pvc = _changed(pvc, "spec", "status")
    annotations = new_pvc["metadata"]["annotations"] = dict(pvc["metadata"].get("annotations") or {})
    if not pvc["spec"].get("volumeName"):
        new_pvc["spec"]["volumeName"] = pv["metadata"]["name"]
        annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
    annotations["pv.kubernetes.io/bind-completed"] = "yes"
    status = new_pvc["status"]
    # Only a claim becoming Bound takes the volume's capacity: once bound, status.capacity is the resizer's and
    # the kubelet's to write (a filesystem smaller than its grown volume is a resize still under way).
    if status.get("phase") != "Bound" and not _same_storage(status.get("capacity"), pv["spec"].get("capacity")):
        status["capacity"] = copy.deepcopy(pv["spec"].get("capacity", {}))
    status.update({"phase": "Bound", "accessModes": pv["spec"].get("accessModes", [])})
    store.save(PVCS, pvc, new_pvc)


def _same_storage(a: dict | None, b: dict | None) -> bool:
    a, b = (a or {}).get("storage"), (b or {}).get("storage")
    if a is None or b is None:
        return a is b
    try:
        return parse_quantity(a) == parse_quantity(b)
    except ValueError:
        return a == b


def _wanted_provisioner(store, pvc: dict) -> str | None:
    """The provisioner kube-controller-manager asks for a volume for this unbound claim: its class's, when the
    class binds immediately or, for WaitForFirstConsumer, once the scheduler has chosen a node. None for a claim
    without a class, or whose class does not exist (yet)."""
    meta, spec = pvc["metadata"], pvc["spec"]
    if meta.get("deletionTimestamp") or spec.get("volumeName") or not spec.get("storageClassName"):
        return None
    sc = store.objects[STORAGE_CLASSES.key].get(("", spec["storageClassName"]))
    if sc is None:
        return None
    if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and SELECTED_NODE not in (meta.get("annotations") or {}):
        return None
    return sc["provisioner"]


def _ask_provisioner(store, pvc: dict) -> None:
    """Annotates the claim with the provisioner that is to provision it, as setClaimProvisioner does (it leaves
    the claim alone if the GA annotation already names that provisioner, else sets both)."""
    provisioner = _wanted_provisioner(store, pvc)
    if provisioner is None or (pvc["metadata"].get("annotations") or {}).get(STORAGE_PROVISIONER) == provisioner:
        return
    new = _changed(pvc)
    annotations = new["metadata"]["annotations"] = dict(pvc["metadata"].get("annotations") or {})
    annotations[BETA_STORAGE_PROVISIONER] = annotations[STORAGE_PROVISIONER] = provisioner
    store.save(PVCS, pvc, new)


def _sync_volume(store, name: str) -> None:
    """The volume side: phases Available/Bound/Released, from the claim its claimRef names."""
    pv = store.objects[PVS.key].get(("", name))
    if pv is None:
        return
    ref = pv["spec"].get("claimRef")
    phase = pv.get("status", {}).get("phase")
    if not ref:
        desired = "Failed" if phase == "Failed" else "Available"
    else:
        pvc = store.objects[PVCS.key].get((ref.get("namespace", ""), ref.get("name", "")))
        bound = pvc is not None and _claim_ref_names(pv, pvc)
        if bound and pvc["spec"].get("volumeName") == pv["metadata"]["name"]:
            desired = "Bound"
        elif ref.get("uid"):
            desired = "Released"
        else:
            desired = "Available"  # pre-bound to a claim that does not exist yet
    if phase != desired:
        new = _changed(pv, "status")
        new["status"]["phase"] = desired
        store.save(PVS, pv, new)
    elif desired == "Released" and _deleted_on_release(pv):
        deleter = store.volume_deleter
        store.mark_deleted(PVS, pv, before=(lambda: deleter(pv)) if deleter else None)


def _deleted_on_release(pv: dict) -> bool:
    """Whether the PV controller reclaims a Released volume by deleting it: reclaim policy Delete and a source
    whose deleter is in-tree, of those robin meets: `glusterfs` (heketi's volumes, as on the clusters robin
    migrates from; the plugin left Kubernetes in 1.26). An external provisioner's volumes are its to delete."""
    return (pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete" and pv["spec"].get("glusterfs") is not None
            and not pv["metadata"].get("deletionTimestamp"))


# --- the kubelet ------------------------------------------------------------------------------------------------

def _finish_pod(store, key: tuple[str, str]) -> None:
    """What a pod's kubelet does once the pod is Terminating: stops it, unmounts its volumes and deletes it for good
    (deletionGracePeriodSeconds 0; it goes unless other finalizers hold it)."""
    pod = store.objects[PODS.key].get(key)
    if pod is None or not pod["metadata"].get("deletionTimestamp") or pod["metadata"].get(
            "deletionGracePeriodSeconds") == 0:
        return
    new = copy.deepcopy(pod)
    new["metadata"]["deletionGracePeriodSeconds"] = 0
    store.save(PODS, pod, new)


# --- namespaces ------------------------------------------------------------------------------------------------

def _sync_namespace(store, name: str) -> None:
    """Deletes everything in a terminating namespace, then the namespace once it is empty."""
    ns = store.objects[NAMESPACES.key].get(("", name))
    if ns is None or not ns["metadata"].get("deletionTimestamp"):
        return
    remaining = 0
    for rt in RESOURCES:
        if not rt.namespaced:
            continue
        for (namespace, _), obj in list(store.objects[rt.key].items()):
            if namespace != name:
                continue
            remaining += 1
            if not obj["metadata"].get("deletionTimestamp"):
                store.mark_deleted(rt, obj)
    if remaining == 0 and (ns.get("spec") or {}).get("finalizers"):
        new = copy.deepcopy(ns)
        new["spec"]["finalizers"] = []
        store.save(NAMESPACES, ns, new)


CONTROLLER_NAMES = {_unprotect_claim: "pvc-protection-controller", _unprotect_volume: "pv-protection-controller",
                    _sync_claim: "persistentvolume-binder", _sync_volume: "persistentvolume-binder",
                    _sync_namespace: "namespace-controller", _finish_pod: "kubelet"}
