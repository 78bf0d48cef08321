"""What the provisioner does with one claim or one PersistentVolume, level-triggered: each sync looks at the
object as it is now (from the informers' caches) and moves it one step closer to where it should be. Every
step is idempotent, so a sync may be repeated, interrupted by a crash, or run again by another replica.

A claim of one of robin's classes, unbound and annotated for robin's provisioner by Kubernetes:
  1. gets the finalizer `robin.io/provisioning` and the annotation `robin.io/volume` (the volume it will get);
  2. robin creates the volume `pvc-<claim uid>` in the claim's project (made on first use);
  3. the PersistentVolume `pvc-<claim uid>`, pre-bound to the claim by uid, is created;
  4. the finalizer is removed: from here the PV stands for the volume.
A claim deleted between 1 and 3 has its volume deleted before the finalizer goes. A PV of robin's that is
Released with reclaim policy Delete has its volume deleted, then the PV; its finalizer `robin.io/volume`
keeps the PV object until that has happened. A bound claim asking for more storage gets its volume resized.
"""
from __future__ import annotations

import logging
import threading
import time

from robin.client import (
    Provisioning,
    RobinApiError,
    RobinClient,
    VolumeRef,
    VolumeTaken,
    made_for,
    round_up_to_mib,
    volume_size,
)
from robin.config import ProvisionerSettings
from robin.faults import crash_point
from robin.kube import volumes as pvs
from robin.kube.claims import (
    PROJECT_ANNOTATION,
    ClaimRequest,
    claim_key,
    claim_owner,
    format_bytes,
    quantity_bytes,
    volume_name,
)
from robin.kube.classes import KIND_BY_PROVISIONER, ClassConfig, InvalidSpec
from robin.kube.client import Kube, KubeError
from robin.provisioner import metrics
from robin.provisioner.events import EventRecorder
from robin.provisioner.workqueue import WorkQueue

log = logging.getLogger(__name__)
PROVISIONER_ANNOTATIONS = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")
RESIZE_CONDITIONS = ("Resizing", "FileSystemResizePending")
# Kubernetes 1.31 has neither the in-tree rbd nor the in-tree cephfs volume plugin.
IN_TREE_REMOVED = (1, 31)
VOLUME_METADATA = ("csi.storage.k8s.io/pvc/name", "csi.storage.k8s.io/pvc/namespace", "csi.storage.k8s.io/pv/name")


class NotYet(Exception):
    """The object is waiting for something else (a volume still being made); look again later."""


def failure_reason(exc: Exception) -> str:
    if isinstance(exc, RobinApiError):
        return exc.code
    if isinstance(exc, KubeError):
        return exc.reason
    return "invalid_spec" if isinstance(exc, InvalidSpec) else "not_yet"


class Controller:
    def __init__(self, settings: ProvisionerSettings, kube: Kube, robin: RobinClient, recorder: EventRecorder,
                 queue: WorkQueue):
        self.settings, self.kube, self.robin, self.recorder, self.queue = settings, kube, robin, recorder, queue
        self.provisioning = Provisioning(robin)
        self.claims = self.volumes = self.classes = self.namespaces = None  # Informers, set by the runner
        self._first_seen: dict[str, float] = {}  # claim uid -> when a volume was first needed (latency metric)
        # PVs this process created that the PV cache has not shown yet: the claim's own update event (from its
        # finalizer patch) brings it back before then, and it must not be provisioned a second time.
        self._created_pvs: set[str] = set()
        # Claims (by uid) whose finalizer this process is removing or has removed while the claim cache may still
        # show it: a sync of that stale copy must not remove it a second time (one PATCH per claim, not two).
        # Dropped once the cache shows the claim without it, or when the claim is held again or deleted.
        self._released: set[str] = set()
        self._lock = threading.Lock()

    # --- informer callbacks: only queue keys ------------------------------------------------------------------

    def on_claim(self, key: str, old: dict | None, new: dict | None) -> None:
        if new is None and old is not None:
            self._first_seen.pop(old["metadata"].get("uid"), None)
            self._released.discard(old["metadata"].get("uid"))
        elif new is not None and pvs.CLAIM_FINALIZER not in (new["metadata"].get("finalizers") or []):
            self._released.discard(new["metadata"].get("uid"))
        self.queue.add("claim/" + key)

    def on_volume(self, key: str, old: dict | None, new: dict | None) -> None:
        self._created_pvs.discard(key)
        pv = new or old
        if pvs.our_volume(pv) is None:
            return
        self.queue.add("volume/" + key)
        ref = (pv.get("spec") or {}).get("claimRef")
        if ref:  # the claim's finalizer and its resize status depend on its PV
            self.queue.add(f"claim/{ref.get('namespace')}/{ref.get('name')}")

    def on_class(self, key: str, old: dict | None, new: dict | None) -> None:
        if new is None or new.get("provisioner") not in KIND_BY_PROVISIONER:
            return
        for claim in self.claims.items():
            if (claim.get("spec") or {}).get("storageClassName") == key:
                self.queue.add("claim/" + claim_key(claim))

    def resync(self) -> None:
        """Queues every claim and every PV of robin's: nothing is left to a watch event that went missing."""
        for claim in self.claims.items():
            self.queue.add("claim/" + claim_key(claim))
        for pv in self.volumes.items():
            if pvs.our_volume(pv) is not None:
                self.queue.add("volume/" + pv["metadata"]["name"])

    # --- the work ---------------------------------------------------------------------------------------------

    def handle(self, key: str) -> None:
        """One sync; a failure is counted and the key retried with backoff."""
        what, _, name = key.partition("/")
        operation = "claim" if what == "claim" else "volume"
        try:
            self.sync_claim(name) if what == "claim" else self.sync_volume(name)
        except (RobinApiError, KubeError, InvalidSpec, NotYet) as exc:
            reason = failure_reason(exc)
            metrics.ERRORS.labels(operation, reason).inc()
            retry_after = exc.retry_after if isinstance(exc, KubeError) and exc.retry_after else 0.0
            delay = self.queue.add_rate_limited(key, retry_after)
            log.log(logging.INFO if isinstance(exc, NotYet) else logging.WARNING,
                    "%s: %s; again in %.1f s", key, exc, delay)
            return
        self.queue.forget(key)

    def sync_claim(self, key: str) -> None:
        claim = self.claims.get(key)
        if claim is None:
            return
        if claim["metadata"].get("deletionTimestamp"):
            self._claim_deleted(claim)
        elif (claim.get("spec") or {}).get("volumeName"):
            self._claim_bound(claim)
        elif self._wanted_provisioner(claim) in KIND_BY_PROVISIONER:
            self._provision(claim)

    def sync_volume(self, name: str) -> None:
        pv = self.volumes.get(name)
        ref = pvs.our_volume(pv)
        if ref is None:
            return
        meta, spec = pv["metadata"], pv.get("spec") or {}
        phase, policy = (pv.get("status") or {}).get("phase"), spec.get("persistentVolumeReclaimPolicy")
        if meta.get("deletionTimestamp"):
            if pvs.VOLUME_FINALIZER not in (meta.get("finalizers") or []):
                return
            if policy == "Delete":
                if phase == "Bound":
                    return  # kubernetes.io/pv-protection holds it until its claim lets go
                self._delete_volume(pv, ref)
            self.kube.patch_volume(name, _without_finalizer(pvs.VOLUME_FINALIZER, meta["uid"]))
        elif phase == "Released" and policy == "Delete":
            self._delete_volume(pv, ref)
            crash_point("provisioner.volume_deleted")
            try:
                # Our finalizer keeps it; its update brings it back here. This very PV: not one made since under
                # its name.
                self.kube.delete_volume(name, uid=meta["uid"])
            except KubeError as exc:
                if exc.status != 404:
                    raise

    # --- claims -------------------------------------------------------------------------------------------------

    def _wanted_provisioner(self, claim: dict) -> str | None:
        annotations = claim["metadata"].get("annotations") or {}
        return next((annotations[a] for a in PROVISIONER_ANNOTATIONS if annotations.get(a)), None)

    def _class_of(self, claim: dict) -> ClassConfig:
        class_name = (claim.get("spec") or {}).get("storageClassName")
        storage_class = self.classes.get(class_name) if class_name else None
        if storage_class is None:
            raise NotYet(f"StorageClass {class_name!r} of claim {claim_key(claim)} is not known (yet)")
        return ClassConfig.parse(storage_class)

    def _provision(self, claim: dict) -> None:
        uid = claim["metadata"]["uid"]
        with self._lock:
            self._first_seen.setdefault(uid, time.monotonic())
        if volume_name(claim) in self._created_pvs or self.volumes.get(volume_name(claim)) is not None:
            self._release_claim(claim)  # the PV exists: Kubernetes binds it
            return
        try:
            klass = self._class_of(claim)
            request = ClaimRequest.parse(claim, klass)
            self._check_volume_source(klass)
            step = time.monotonic()
            claim, ref = self._hold_claim(claim, klass)
            step = _step_done("hold", step)
            crash_point("provisioner.claim_held")
            volume = self._ensure_volume(claim, klass, request, ref)
            step = _step_done("volume", step)
            crash_point("provisioner.volume_created")
            size = volume_size(ref.kind, volume)
            pv = pvs.build(claim, klass, request, ref, volume, size, self.provisioning.cluster(volume["cluster"]))
            self._create_pv(pv, claim)
            _step_done("pv", step)
            self._created_pvs.add(ref.name)
            crash_point("provisioner.pv_created")
        except (RobinApiError, KubeError, InvalidSpec) as exc:
            message = exc.explanation if isinstance(exc, RobinApiError) else str(exc)
            self.recorder.warning(claim, "ProvisioningFailed", f"failed to provision volume with StorageClass "
                                  f"{(claim.get('spec') or {}).get('storageClassName')!r}: {message}")
            metrics.OPERATIONS.labels("provision", "error").inc()
            raise
        with self._lock:
            started = self._first_seen.pop(uid, None)
        if started is not None:
            metrics.PROVISIONING_SECONDS.labels(ref.kind).observe(time.monotonic() - started)
        metrics.OPERATIONS.labels("provision", "ok").inc()
        self.recorder.normal(claim, "ProvisioningSucceeded", f"Successfully provisioned volume {ref.name}: "
                             f"{_describe(ref, volume)} of {format_bytes(size)} in robin project {ref.project}")
        self._release_claim(claim)

    def _check_volume_source(self, klass: ClassConfig) -> None:
        """Before anything is made: in-tree PVs only where Kubernetes still mounts them. Asked of the API server
        for each such claim (they are few), so a control plane upgraded meanwhile is seen at once."""
        if klass.volume_source != "in-tree":
            return
        major, minor = self.kube.server_version()
        if (major, minor) >= IN_TREE_REMOVED:
            raise InvalidSpec(f"StorageClass {klass.name}: volumeSource in-tree makes PVs with Kubernetes' own "
                              f"{klass.kind} volume source, which Kubernetes removed in "
                              f"{IN_TREE_REMOVED[0]}.{IN_TREE_REMOVED[1]}, and this cluster runs {major}.{minor}: "
                              f"no node could mount them. Use volumeSource csi (the default) with robin's CSI "
                              f"driver")

    def _project_of(self, claim: dict) -> str:
        namespace_name = claim["metadata"]["namespace"]
        namespace = self.namespaces.get(namespace_name)
        if namespace is None:  # created a moment ago: not in the cache yet
            namespace = self.kube.call(self.kube.core.read_namespace, namespace_name)
        return (namespace["metadata"].get("annotations") or {}).get(PROJECT_ANNOTATION) or namespace_name

    def _hold_claim(self, claim: dict, klass: ClassConfig) -> tuple[dict, VolumeRef]:
        """Step 1: the finalizer, and the volume the claim gets, recorded on the claim (a later change of the
        namespace's project annotation must not make a second volume)."""
        meta = claim["metadata"]
        ref = self._volume_of(claim, klass)
        held = pvs.CLAIM_FINALIZER in (meta.get("finalizers") or [])
        if held and (meta.get("annotations") or {}).get(pvs.VOLUME_ANNOTATION) == ref.handle:
            return claim, ref
        patch = {"metadata": {"finalizers": [pvs.CLAIM_FINALIZER], "annotations": {pvs.VOLUME_ANNOTATION: ref.handle}}}
        self._released.discard(meta["uid"])  # held again: a later release must not be skipped
        return self.kube.patch_claim(meta["namespace"], meta["name"], patch), ref

    def _volume_of(self, claim: dict, klass: ClassConfig) -> VolumeRef:
        """The claim's volume: pvc-<uid> in its namespace's project. The claim's author can write the recorded
        annotation too, so it counts only where robin made that volume for this claim (the project annotation
        changed after step 2); any other is ignored, with a Warning event on the claim."""
        derived = VolumeRef(klass.kind, self._project_of(claim), volume_name(claim))
        recorded = _recorded_volume(claim)
        if recorded is None or recorded == derived:
            return derived
        if recorded.kind == derived.kind and _made_for_claim(claim, recorded, self.provisioning.volume(recorded)):
            return recorded
        self._ignore_recorded(claim, f"its volume is {derived.handle}")
        return derived

    def _ignore_recorded(self, claim: dict, outcome: str) -> None:
        """A Warning event on the claim: what its annotation named was not obeyed."""
        recorded = (claim["metadata"].get("annotations") or {}).get(pvs.VOLUME_ANNOTATION)
        self.recorder.warning(claim, "VolumeAnnotationIgnored", f"ignored {pvs.VOLUME_ANNOTATION}: {recorded!r}: "
                              f"robin made no such volume for this claim; {outcome}")

    def _release_claim(self, claim: dict) -> None:
        meta = claim["metadata"]
        if pvs.CLAIM_FINALIZER not in (meta.get("finalizers") or []) or meta["uid"] in self._released:
            return
        self._released.add(meta["uid"])  # before the request: its watch event may come before its answer
        try:
            self.kube.patch_claim(meta["namespace"], meta["name"], _without_finalizer(pvs.CLAIM_FINALIZER))
        except BaseException:  # not removed, or not known to be: the next sync tries again
            self._released.discard(meta["uid"])
            raise

    def _ensure_volume(self, claim: dict, klass: ClassConfig, request: ClaimRequest, ref: VolumeRef) -> dict:
        """Step 2: the project (made on first use) and the volume, or the one an earlier attempt made."""
        defaults = {"max_bytes": self.settings.default_quota_bytes, "max_volumes": self.settings.default_quota_volumes,
                    "max_snapshots": self.settings.default_quota_snapshots}
        fields = self._volume_fields(claim, klass, request, ref)
        try:
            # Unrecorded: made before robin kept the record. `ref` is this claim's own pvc-<uid> in its project here
            # (a recorded annotation elsewhere was checked against the record in step 1), so it is this claim's.
            provisioned = self.provisioning.provision(ref, request.size_bytes, owner=claim_owner(claim),
                                                      quota=klass.project_quota(defaults), fields=fields,
                                                      adopt_unrecorded=True)
        except VolumeTaken as exc:
            if exc.volume is None:
                raise InvalidSpec(f"the name {ref.name} is taken by a volume outside project {ref.project}") from None
            raise InvalidSpec(f"volume {ref.handle} exists and was not made for claim {claim_key(claim)}; robin "
                              f"leaves it alone") from None
        if not provisioned.created and provisioned.volume["state"] != "available":
            raise NotYet(f"volume {ref.handle} is {provisioned.volume['state']}")
        return provisioned.volume

    def _volume_fields(self, claim: dict, klass: ClassConfig, request: ClaimRequest, ref: VolumeRef) -> dict:
        if ref.kind != "rbd":
            return klass.volume_fields()
        meta = claim["metadata"]
        fields = {}
        if self.settings.image_metadata:
            fields["metadata"] = dict(zip(VOLUME_METADATA, (meta["name"], meta["namespace"], ref.name), strict=True))
        if request.clone_of is None:
            return {**klass.volume_fields(), **fields}
        source = self.claims.get(f"{meta['namespace']}/{request.clone_of}")
        source_ref = self._bound_volume(source) if source else None
        if source_ref is None or source_ref.kind != "rbd" or source_ref.project != ref.project:
            raise NotYet(f"claim {request.clone_of} to clone is not bound to an RBD image of robin's in project "
                         f"{ref.project} (yet)")
        return {**fields, "source": {"image": source_ref.name}}

    def _create_pv(self, pv: dict, claim: dict) -> None:
        try:
            self.kube.create_volume(pv)
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
        existing = self.kube.get_volume(pv["metadata"]["name"])
        if ((existing.get("spec") or {}).get("claimRef") or {}).get("uid") != claim["metadata"]["uid"]:
            raise InvalidSpec(f"PersistentVolume {pv['metadata']['name']} exists and is not for claim "
                              f"{claim_key(claim)}")

    def _claim_deleted(self, claim: dict) -> None:
        """A claim deleted while we held it: its volume goes too, unless its PV was made (the PV then goes
        through its reclaim policy). Only a volume robin made for this very claim: the recorded annotation is
        the claim author's to write, and the finalizer too."""
        meta = claim["metadata"]
        if pvs.CLAIM_FINALIZER not in (meta.get("finalizers") or []):
            return
        ref = _recorded_volume(claim)
        if ref is not None and not self._pv_exists(volume_name(claim)):
            volume = self.provisioning.volume(ref)
            if _made_for_claim(claim, ref, volume, unrecorded_in=self._project_of(claim)):
                self._delete_claims_volume(claim, ref)
            elif volume is not None:
                self._ignore_recorded(claim, "nothing was deleted")
        self._release_claim(claim)

    def _delete_claims_volume(self, claim: dict, ref: VolumeRef) -> None:
        try:
            self.robin.delete_volume(ref.kind, ref.project, ref.name)
            log.info("deleted %s: its claim %s went away before it was bound", ref.handle, claim_key(claim))
        except RobinApiError as exc:
            if exc.code not in ("volume_not_found", "project_not_found"):
                raise

    def _pv_exists(self, name: str) -> bool:
        """Asked of the API server, not the cache: deleting a volume on a stale answer would lose data."""
        try:
            self.kube.get_volume(name)
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    def _claim_bound(self, claim: dict) -> None:
        self._release_claim(claim)
        ref = self._bound_volume(claim)
        if ref is not None:
            self._expand_if_asked(claim, self.volumes.get(claim["spec"]["volumeName"]), ref)

    def _bound_volume(self, claim: dict) -> VolumeRef | None:
        """The robin volume of the PV the claim is Bound to, if that PV is ours and bound to this claim by uid
        (a claim's author can name any PV in spec.volumeName)."""
        pv = self.volumes.get((claim.get("spec") or {}).get("volumeName") or "")
        ref = pvs.our_volume(pv)
        if ref is None or (claim.get("status") or {}).get("phase") != "Bound":
            return None
        bound_to = ((pv.get("spec") or {}).get("claimRef") or {}).get("uid")
        return ref if bound_to == claim["metadata"]["uid"] else None

    # --- expansion ----------------------------------------------------------------------------------------------

    def _expand_if_asked(self, claim: dict, pv: dict, ref: VolumeRef) -> None:
        requested = quantity_bytes(((claim["spec"].get("resources") or {}).get("requests") or {}).get("storage", "0"))
        pv_size = quantity_bytes(pv["spec"]["capacity"]["storage"])
        if requested > pv_size:
            klass = self._class_of(claim)
            if not klass.allow_expansion:
                return  # the API server refuses such a change; nothing to do if one slipped through
            pv_size = self._expand(claim, pv, ref, round_up_to_mib(requested))
        self._converge_resize_status(claim, pv_size, node_must_grow=ref.kind == "rbd" and (
            claim["spec"].get("volumeMode") or "Filesystem") == "Filesystem")

    def _expand(self, claim: dict, pv: dict, ref: VolumeRef, target: int) -> int:
        meta = claim["metadata"]
        self.kube.patch_claim_status(meta["namespace"], meta["name"], {"status": {
            "conditions": _conditions(claim, "Resizing"),
            "allocatedResources": {"storage": format_bytes(target)},
            "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"}}})
        volume = self.robin.get_volume(ref.kind, ref.project, ref.name)
        if volume_size(ref.kind, volume) < target:  # else an earlier attempt got that far: never shrink
            try:
                volume = self.robin.resize_volume(ref.kind, ref.project, ref.name, target)
            except RobinApiError as exc:
                self.recorder.warning(claim, "VolumeResizeFailed", f"resize of {ref.name} to "
                                      f"{format_bytes(target)} failed: {exc.explanation}")
                metrics.OPERATIONS.labels("expand", "error").inc()
                raise
        crash_point("provisioner.volume_resized")
        size = volume_size(ref.kind, volume)
        self.kube.patch_volume(pv["metadata"]["name"], {"spec": {"capacity": {"storage": format_bytes(size)}}})
        metrics.OPERATIONS.labels("expand", "ok").inc()
        self.recorder.normal(claim, "VolumeResizeSuccessful", f"{_describe(ref, volume)} resized to "
                             f"{format_bytes(size)}")
        return size

    def _converge_resize_status(self, claim: dict, pv_size: int, node_must_grow: bool) -> None:
        """After a resize the claim shows the new capacity, or, where the node must grow the file system first,
        FileSystemResizePending (kubelet then writes the capacity and drops the condition)."""
        meta, status = claim["metadata"], claim.get("status") or {}
        capacity = quantity_bytes((status.get("capacity") or {}).get("storage", "0"))
        if capacity >= pv_size:
            return
        if node_must_grow:
            patch = {"conditions": _conditions(claim, "FileSystemResizePending"),
                     "allocatedResourceStatuses": {"storage": "NodeResizePending"}}
        else:
            patch = {"capacity": {"storage": format_bytes(pv_size)}, "conditions": _conditions(claim, None),
                     "allocatedResourceStatuses": None}
        patch["allocatedResources"] = {"storage": format_bytes(pv_size)}
        if _status_has(status, patch):
            return
        self.kube.patch_claim_status(meta["namespace"], meta["name"], {"status": patch})

    # --- volumes ------------------------------------------------------------------------------------------------

    def _delete_volume(self, pv: dict, ref: VolumeRef) -> None:
        self._confirm_reclaim(pv)
        try:
            self.robin.delete_volume(ref.kind, ref.project, ref.name)
        except RobinApiError as exc:
            if exc.code in ("volume_not_found", "project_not_found"):
                return
            self.recorder.warning(pv, "VolumeFailedDelete", f"robin did not delete {ref.handle}: {exc.explanation}")
            metrics.OPERATIONS.labels("delete", "error").inc()
            raise
        metrics.OPERATIONS.labels("delete", "ok").inc()
        log.info("deleted %s: PersistentVolume %s was released", ref.handle, pv["metadata"]["name"])

    def _confirm_reclaim(self, cached: dict) -> None:
        """The PV as the API server has it now must still say what the cached copy said (same object, same reclaim
        policy, phase and claim), else NotYet: the sync runs again on the newer copy. The informer's cache may lag
        behind by any time (a slow watch, a busy process), and deleting on a stale copy would lose the data of a
        PV an admin switched to Retain, or bound again, meanwhile. Kubernetes' own PV controller reads the PV again
        before it deletes, too. A PV gone altogether keeps its volume: no reclaim policy says what to do."""
        name = cached["metadata"]["name"]
        try:
            current = self.kube.get_volume(name)
        except KubeError as exc:
            if exc.status == 404:
                raise NotYet(f"PersistentVolume {name} is gone: its volume is left alone") from None
            raise
        if _reclaim_facts(current) != _reclaim_facts(cached):
            raise NotYet(f"PersistentVolume {name} changed since it was last seen (now {_reclaim_facts(current)}): "
                         "its volume is not deleted on the older copy")


def _step_done(step: str, started: float) -> float:
    """Records a provisioning step that began at `started`; returns now, when the next one begins."""
    now = time.monotonic()
    metrics.STEP_SECONDS.labels(step).observe(now - started)
    return now


def _recorded_volume(claim: dict) -> VolumeRef | None:
    """The volume the claim's annotation names (None without one, or when it names none)."""
    recorded = (claim["metadata"].get("annotations") or {}).get(pvs.VOLUME_ANNOTATION)
    try:
        return VolumeRef.parse(recorded) if recorded else None
    except ValueError:
        return None


def _made_for_claim(claim: dict, ref: VolumeRef, volume: dict | None, unrecorded_in: str | None = None) -> bool:
    """robin made `volume` (at `ref`) for this claim: its record says so, under the claim's own volume name. A
    volume made before robin kept the record counts only as the claim's own pvc-<uid> in project `unrecorded_in`
    (the one its namespace names), where nothing the claim's author wrote can point."""
    if volume is None or ref.name != volume_name(claim):
        return False
    unrecorded_ok = unrecorded_in is not None and ref.project == unrecorded_in
    return made_for(volume, claim_owner(claim), unrecorded_ok=unrecorded_ok)


def _reclaim_facts(pv: dict) -> tuple:
    """What decides whether a PV's volume is deleted: which object it is, its reclaim policy and phase, whether it
    is being deleted, and the claim it was bound to."""
    spec = pv.get("spec") or {}
    return (pv["metadata"].get("uid"), spec.get("persistentVolumeReclaimPolicy"), (pv.get("status") or {}).get("phase"),
            bool(pv["metadata"].get("deletionTimestamp")), (spec.get("claimRef") or {}).get("uid"))


def _without_finalizer(finalizer: str, uid: str | None = None) -> dict:
    """The patch removing `finalizer`; with `uid`, from that object only (a precondition: 409 for another one)."""
    metadata = {"$deleteFromPrimitiveList/finalizers": [finalizer]}
    return {"metadata": {**metadata, "uid": uid} if uid else metadata}


def _describe(ref: VolumeRef, volume: dict) -> str:
    if ref.kind == "rbd":
        return f"RBD image {volume.get('pool')}/{ref.name}"
    return f"CephFS path {volume.get('path')}"


def _conditions(claim: dict, current: str | None) -> list[dict]:
    """The claim's conditions with the resize ones replaced by `current` (or none)."""
    kept = [c for c in (claim.get("status") or {}).get("conditions") or () if c.get("type") not in RESIZE_CONDITIONS]
    if current is None:
        return kept
    existing = next((c for c in (claim.get("status") or {}).get("conditions") or () if c.get("type") == current), None)
    return kept + [existing or {"type": current, "status": "True",
                                "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]


def _status_has(status: dict, patch: dict) -> bool:
    for key, value in patch.items():
        current = status.get(key)
        if key == "conditions":
            if [c.get("type") for c in current or ()] != [c.get("type") for c in value]:
                return False
        elif (current or None) != value:
            return False
    return True
