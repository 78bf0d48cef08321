"""Cut-over of a migrated GlusterFS PersistentVolume: its claim is rebound to a PV of the robin volume that took its
data, and the old PV is kept (Retain) until `finalize`.

A bound claim's volume cannot be changed, so the claim is replaced by one of the same namespace and name: the
workloads referring to it by name find their data on Ceph when they start again. Every step is idempotent and
leaves what a rerun needs on the old PV (the `robin.io/migrated-*` annotations), so after a crash anywhere the
same call finishes the job:

  a. the old PV gets Retain (deleting its claim must never delete the GlusterFS volume behind it) and, in
     annotations, the destination and a copy of the claim;
  b. the old claim is deleted, and gone (pvc-protection keeps it while a pod uses it);
  c. the new claim is created, naming the new PV;
  d. the new PV is created by the provisioner's own builder, pre-bound to the new claim by uid, so robin's
     provisioner owns it from then on (expansion, reclaim);
  e. the new claim is Bound.
"""
from __future__ import annotations

import json
import time

from robin.client import RobinApiError, RobinClient, VolumeRef, volume_size
from robin.kube.claims import ClaimRequest, claim_key, format_bytes, quantity_bytes
from robin.kube.classes import KIND_BY_PROVISIONER, ClassConfig, InvalidSpec
from robin.kube.client import MERGE, Kube, KubeError
from robin.kube.volumes import VOLUME_ANNOTATION, build, our_volume
from robin.migrate.kubernetes import GlusterPv, KubeMigrationError

MIGRATED_TO = "robin.io/migrated-to"  # on the old PV: the handle of the robin volume its data went to
MIGRATED_CLAIM = "robin.io/migrated-claim"  # on the old PV: what recreating its claim needs (JSON)
MIGRATED_FROM = "robin.io/migrated-from"  # on the new PV: the old PV's name
POLL_INTERVAL = 0.2
ROBIN_PREFIX = "robin.io"  # robin's annotations on a claim (robin.io/volume)


class CutoverError(KubeMigrationError):
    """Codes: claim_not_found, claim_not_bound, claim_in_use, claim_invalid, pv_not_found, pv_exists,
    already_migrated, storage_class_invalid, volume_not_found, volume_not_available, volume_taken, project_mismatch,
    not_migrated, cutover_incomplete, timeout."""


def pods_using(kube: Kube, namespace: str, claim: str) -> list[str]:
    """The pods of `namespace` holding `claim`, as pvc-protection counts them: naming it in a volume and scheduled
    (spec.nodeName), whatever their phase, until they are gone. A finished pod that still exists holds it (deleting
    the claim would wait for the pod); one never scheduled does not (it starts on the new claim)."""
    pods = kube.call(kube.core.list_namespaced_pod, namespace)["items"]
    return sorted(pod["metadata"]["name"] for pod in pods
                  if (pod.get("spec") or {}).get("nodeName")
                  and any((volume.get("persistentVolumeClaim") or {}).get("claimName") == claim
                          for volume in (pod.get("spec") or {}).get("volumes") or ()))


def pods_using_volume(kube: Kube, ref: VolumeRef) -> list[str]:
    """namespace/name of the pods holding a claim bound to a PV of the robin volume (after a cut-over, or any PV
    robin's provisioner made for it)."""
    pods = []
    for pv in kube.call(kube.core.list_persistent_volume)["items"]:
        claim = pv["spec"].get("claimRef") or {}
        if our_volume(pv) == ref and claim.get("name"):
            pods += [f"{claim['namespace']}/{pod}" for pod in pods_using(kube, claim["namespace"], claim["name"])]
    return pods


def cutover(kube: Kube, client: RobinClient, gpv: GlusterPv, ref: VolumeRef, storage_class: str,
            timeout: float = 120) -> dict:
    """Rebinds the claim of `gpv` to a new PV of `ref` (of class `storage_class`). Every precondition is checked
    before anything changes; a cut-over already done is a success that changes nothing."""
    deadline = time.monotonic() + timeout
    if not gpv.claim_name:
        raise CutoverError("claim_not_bound", f"PersistentVolume {gpv.name} has no claim; nothing to cut over")
    namespace, name = gpv.claim_namespace, gpv.claim_name
    summary = {"pv": gpv.name, "claim": f"{namespace}/{name}", "new_pv": ref.name, "handle": ref.handle,
               "storage_class": storage_class, "old_claim_uid": gpv.claim_uid, "steps": []}
    claim = _get(kube.core.read_namespaced_persistent_volume_claim, kube, name, namespace)
    if _cut_over(kube, claim, ref):
        return {**summary, "claim_uid": claim["metadata"]["uid"], "changed": False}
    old_pv = _get(kube.core.read_persistent_volume, kube, gpv.name)
    if old_pv is None:
        raise CutoverError("pv_not_found", f"PersistentVolume {gpv.name} does not exist (finalized already?) and "
                                           f"claim {namespace}/{name} is not bound to {ref.name}")
    original = claim is not None and _is_original(claim, old_pv)
    template = _template(old_pv, claim, original, ref)
    new_claim, klass, volume = _check_destination(kube, client, gpv, ref, storage_class, template)
    if original:
        _refuse_if_used(kube, namespace, name)
        _retain(kube, old_pv, claim, ref)
        _delete_claim(kube, claim, deadline)
        summary["steps"] += ["retained", "claim_deleted"]
        claim = None
    if claim is None:
        claim = _create_claim(kube, new_claim)
        summary["steps"].append("claim_created")
    if _ensure_pv(kube, client, claim, ref, klass, volume, gpv.name):
        summary["steps"].append("pv_created")
    claim = _wait_bound(kube, namespace, name, ref.name, deadline)
    return {**summary, "claim_uid": claim["metadata"]["uid"], "changed": True}


# --- what is there --------------------------------------------------------------------------------------------

def _get(method, kube: Kube, *args) -> dict | None:
    """The object, or None when it does not exist."""
    try:
        return kube.call(method, *args)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


def _cut_over(kube: Kube, claim: dict | None, ref: VolumeRef) -> bool:
    """The claim is Bound to the PV of `ref`: the job is done."""
    if claim is None or claim["spec"].get("volumeName") != ref.name or _phase(claim) != "Bound":
        return False
    pv = _get(kube.core.read_persistent_volume, kube, ref.name)
    return pv is not None and (pv["metadata"].get("annotations") or {}).get(VOLUME_ANNOTATION) == ref.handle


def _phase(obj: dict) -> str | None:
    return (obj.get("status") or {}).get("phase")


def _is_original(claim: dict, old_pv: dict) -> bool:
    """The claim is the one the old PV was bound to (same uid), not a new one of the same name."""
    ref = old_pv["spec"].get("claimRef") or {}
    return claim["spec"].get("volumeName") == old_pv["metadata"]["name"] and claim["metadata"]["uid"] == ref.get(
        "uid")


def _template(old_pv: dict, claim: dict | None, original: bool, ref: VolumeRef) -> dict:
    """What the new claim is made from: the original claim while it exists, else the copy saved on the old PV by
    step a (the claim was deleted since). Refuses every other state of the claim."""
    annotations = old_pv["metadata"].get("annotations") or {}
    migrated_to, name = annotations.get(MIGRATED_TO), old_pv["metadata"]["name"]
    claim_ref = old_pv["spec"].get("claimRef") or {}
    key = claim_key(claim) if claim else f"{claim_ref.get('namespace')}/{claim_ref.get('name')}"
    if migrated_to and migrated_to != ref.handle:
        raise CutoverError("already_migrated", f"PersistentVolume {name} was cut over to {migrated_to}, not "
                                               f"{ref.handle}")
    if original:
        if _phase(claim) != "Bound":
            raise CutoverError("claim_not_bound", f"claim {key} is {_phase(claim)}, not Bound to {name}")
        return saved_claim(claim)
    if claim is not None and not (migrated_to and claim["spec"].get("volumeName") == ref.name):
        raise CutoverError("claim_not_bound", f"claim {key} is not bound to {name} but to "
                           f"{claim['spec'].get('volumeName') or 'nothing'}; it was replaced by someone else")
    if not migrated_to or MIGRATED_CLAIM not in annotations:
        raise CutoverError("claim_not_found", f"claim {key} of PersistentVolume {name} does not exist")
    return json.loads(annotations[MIGRATED_CLAIM])


def _kept_annotation(key: str) -> bool:
    """The binding and provisioning annotations of Kubernetes describe the old binding, not the claim, and robin's
    are its provisioner's records, which only it writes (one the claim's author wrote must not reach the new
    claim); the rest (kubectl's last-applied-configuration included, so that re-applying the old manifest changes
    nothing) stays."""
    prefix = key.partition("/")[0] if "/" in key else ""
    return not (prefix in ("pv.kubernetes.io", ROBIN_PREFIX)
                or (prefix.startswith("volume.") and prefix.endswith("kubernetes.io")))


def saved_claim(claim: dict) -> dict:
    """The parts of a claim its replacement keeps. Owner references too: a StatefulSet's retention policy names
    its claims by them."""
    meta, spec = claim["metadata"], claim["spec"]
    return {"uid": meta["uid"], "labels": meta.get("labels") or {},
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if _kept_annotation(k)},
            "ownerReferences": meta.get("ownerReferences") or [],
            "spec": {k: spec[k] for k in ("accessModes", "resources", "volumeMode") if k in spec}}


# --- preconditions --------------------------------------------------------------------------------------------

def _check_destination(kube: Kube, client: RobinClient, gpv: GlusterPv, ref: VolumeRef, storage_class: str,
                       template: dict) -> tuple[dict, ClassConfig, dict]:
    """Refuses a destination the provisioner could not own; the new claim to create, its class and robin's
    description of the volume."""
    if gpv.project != ref.project:
        raise CutoverError("project_mismatch", f"claim {gpv.claim_key} belongs to robin project {gpv.project} (its "
                           f"namespace's), but {ref.handle} is in project {ref.project}")
    klass = _robin_class(kube, storage_class, ref)
    volume = _robin_volume(client, ref)
    new_claim = _new_claim(gpv, ref, klass, template, volume_size(ref.kind, volume))
    try:
        ClaimRequest.parse(new_claim, klass)
    except InvalidSpec as exc:
        raise CutoverError("claim_invalid", str(exc)) from None
    pv = _get(kube.core.read_persistent_volume, kube, ref.name)
    if pv is not None and (our_volume(pv) != ref or
                           (pv["metadata"].get("annotations") or {}).get(MIGRATED_FROM) != gpv.name):
        raise CutoverError("pv_exists", f"PersistentVolume {ref.name} exists and is not the cut-over of {gpv.name}")
    return new_claim, klass, volume


def _robin_class(kube: Kube, name: str, ref: VolumeRef) -> ClassConfig:
    storage_class = _get(kube.storage.read_storage_class, kube, name)
    if storage_class is None:
        raise CutoverError("storage_class_invalid", f"StorageClass {name} does not exist")
    provisioner = storage_class.get("provisioner")
    if provisioner not in KIND_BY_PROVISIONER:
        raise CutoverError("storage_class_invalid", f"StorageClass {name} is {provisioner}'s, not robin's; use a "
                           f"class with provisioner robin.io/{ref.kind}")
    try:
        klass = ClassConfig.parse(storage_class)
    except InvalidSpec as exc:
        raise CutoverError("storage_class_invalid", str(exc)) from None
    if klass.kind != ref.kind:
        raise CutoverError("storage_class_invalid", f"StorageClass {name} makes {klass.kind} volumes but "
                           f"{ref.handle} is {ref.kind}; use a class with provisioner robin.io/{ref.kind}")
    return klass


def _robin_volume(client: RobinClient, ref: VolumeRef) -> dict:
    try:
        volume = client.get_volume(ref.kind, ref.project, ref.name)
    except RobinApiError as exc:
        if exc.status == 404:
            raise CutoverError("volume_not_found", f"robin volume {ref.handle} does not exist: {exc}") from None
        raise
    if volume.get("state") != "available":
        raise CutoverError("volume_not_available", f"robin volume {ref.handle} is {volume.get('state')}, not "
                                                   f"available")
    if volume.get("created_for"):  # another claim's, or the CSI plugin's: theirs to bind, never this claim's
        raise CutoverError("volume_taken", f"robin volume {ref.handle} was made for {volume['created_for']}; a "
                                           f"claim is cut over only to a volume made for the migration")
    return volume


def _new_claim(gpv: GlusterPv, ref: VolumeRef, klass: ClassConfig, template: dict, size: int) -> dict:
    """The replacement claim: the old one's labels, annotations and modes, asking for the new PV by name. Its
    request stays the old one unless the robin volume is smaller (a PV must hold at least what its claim asks)."""
    spec = json.loads(json.dumps(template["spec"]))
    requests = spec.setdefault("resources", {}).setdefault("requests", {})
    if not requests.get("storage") or quantity_bytes(requests["storage"]) > size:
        requests["storage"] = format_bytes(size)
    spec.update(storageClassName=klass.name, volumeName=ref.name)
    metadata = {"name": gpv.claim_name, "namespace": gpv.claim_namespace, "labels": template["labels"],
                "annotations": template["annotations"]}
    if template.get("ownerReferences"):
        metadata["ownerReferences"] = template["ownerReferences"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def _refuse_if_used(kube: Kube, namespace: str, name: str) -> None:
    pods = pods_using(kube, namespace, name)
    if pods:
        raise CutoverError("claim_in_use", f"claim {namespace}/{name} is used by pod(s) {', '.join(pods)}; scale "
                                           f"the workload down first")


# --- the steps ------------------------------------------------------------------------------------------------

def _retain(kube: Kube, old_pv: dict, claim: dict, ref: VolumeRef) -> None:
    """Step a. Before the claim goes: with Delete, losing its claim would delete the GlusterFS volume itself."""
    patch = {"metadata": {"annotations": {MIGRATED_TO: ref.handle,
                                          MIGRATED_CLAIM: json.dumps(saved_claim(claim), sort_keys=True)}},
             "spec": {"persistentVolumeReclaimPolicy": "Retain"}}
    kube.patch_volume(old_pv["metadata"]["name"], patch, MERGE)


def _delete_claim(kube: Kube, claim: dict, deadline: float) -> None:
    """Step b: deletes this claim (by uid: never a newer one of the same name) and waits until it is gone."""
    meta = claim["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    try:
        kube.call(kube.core.delete_namespaced_persistent_volume_claim, name, namespace,
                  body={"preconditions": {"uid": uid}})
    except KubeError as exc:
        if exc.status not in (404, 409):  # gone already, or replaced: either way not there any more
            raise

    def gone() -> bool:
        current = _get(kube.core.read_namespaced_persistent_volume_claim, kube, name, namespace)
        return current is None or current["metadata"]["uid"] != uid

    _wait(gone, deadline, f"claim {namespace}/{name} to be deleted (its finalizers "
                          f"{meta.get('finalizers') or []} hold it; does a pod still use it?)")


def _create_claim(kube: Kube, body: dict) -> dict:
    """Step c. A claim of that name appearing meanwhile is taken only if it names the new PV."""
    meta = body["metadata"]
    try:
        return kube.call(kube.core.create_namespaced_persistent_volume_claim, meta["namespace"], body)
    except KubeError as exc:
        if exc.status != 409:
            raise
    claim = kube.call(kube.core.read_namespaced_persistent_volume_claim, meta["name"], meta["namespace"])
    if claim["spec"].get("volumeName") != body["spec"]["volumeName"]:
        raise CutoverError("claim_not_bound", f"claim {claim_key(claim)} was recreated by someone else while it "
                                              f"was being cut over (a workload scaled up?); it names volume "
                                              f"{claim['spec'].get('volumeName') or 'none'}")
    return claim


def _ensure_pv(kube: Kube, client: RobinClient, claim: dict, ref: VolumeRef, klass: ClassConfig, volume: dict,
               old_pv_name: str) -> bool:
    """Step d: the PV the provisioner would have made for this claim and volume, unless it exists (then True)."""
    existing = _get(kube.core.read_persistent_volume, kube, ref.name)
    if existing is not None:
        _check_prebound(existing, claim)
        return False
    body = build(claim, klass, ClaimRequest.parse(claim, klass), ref, volume, volume_size(ref.kind, volume),
                 client.get_cluster(volume["cluster"]))
    body["metadata"]["annotations"][MIGRATED_FROM] = old_pv_name
    try:
        kube.create_volume(body)
    except KubeError as exc:
        if exc.status != 409:
            raise
        _check_prebound(kube.get_volume(ref.name), claim)
        return False
    return True


def _check_prebound(pv: dict, claim: dict) -> None:
    uid = (pv["spec"].get("claimRef") or {}).get("uid")
    if uid and uid != claim["metadata"]["uid"]:
        raise CutoverError("pv_exists", f"PersistentVolume {pv['metadata']['name']} is bound to an earlier claim "
                           f"{claim_key(claim)} (uid {uid}); the claim was replaced after the cut-over started")


def _wait_bound(kube: Kube, namespace: str, name: str, volume: str, deadline: float) -> dict:
    """Step e."""
    found = {}

    def bound() -> bool:
        found["claim"] = kube.call(kube.core.read_namespaced_persistent_volume_claim, name, namespace)
        return found["claim"]["spec"].get("volumeName") == volume and _phase(found["claim"]) == "Bound"

    _wait(bound, deadline, f"claim {namespace}/{name} to be Bound to {volume}")
    return found["claim"]


def _wait(predicate, deadline: float, what: str) -> None:
    while not predicate():
        if time.monotonic() > deadline:
            raise CutoverError("timeout", f"timed out waiting for {what}; run the cut-over again to resume")
        time.sleep(POLL_INTERVAL)


# --- finalize -------------------------------------------------------------------------------------------------

def finalize(kube: Kube, pv: GlusterPv | str, timeout: float = 60) -> dict:
    """Deletes the old PV object once its claim is bound to the robin volume it was cut over to. Only the object:
    it is Retain, so the GlusterFS volume stays, for the admin to delete."""
    name = pv if isinstance(pv, str) else pv.name
    old_pv = _get(kube.core.read_persistent_volume, kube, name)
    if old_pv is None:
        return {"pv": name, "deleted": False, "already_gone": True}
    handle = (old_pv["metadata"].get("annotations") or {}).get(MIGRATED_TO)
    if not handle:
        raise CutoverError("not_migrated", f"PersistentVolume {name} was not cut over (no {MIGRATED_TO} "
                                           f"annotation); run the cut-over first")
    _check_cut_over(kube, old_pv, handle)
    uid = old_pv["metadata"]["uid"]
    try:
        kube.call(kube.core.delete_persistent_volume, name, body={"preconditions": {"uid": uid}})
    except KubeError as exc:
        if exc.status != 404:
            raise

    def gone() -> bool:
        current = _get(kube.core.read_persistent_volume, kube, name)
        return current is None or current["metadata"]["uid"] != uid

    _wait(gone, time.monotonic() + timeout, f"PersistentVolume {name} to be deleted")
    return {"pv": name, "deleted": True, "already_gone": False, "migrated_to": handle}


def _check_cut_over(kube: Kube, old_pv: dict, handle: str) -> None:
    """The claim the old PV was bound to is now Bound to a PV of `handle`."""
    ref = old_pv["spec"].get("claimRef") or {}
    key = f"{ref.get('namespace')}/{ref.get('name')}"
    claim = _get(kube.core.read_namespaced_persistent_volume_claim, kube, ref.get("name"), ref.get("namespace"))
    volume = (claim or {}).get("spec", {}).get("volumeName")
    new_pv = _get(kube.core.read_persistent_volume, kube, volume) if volume else None
    if claim is None or _phase(claim) != "Bound" or new_pv is None or \
            (new_pv["metadata"].get("annotations") or {}).get(VOLUME_ANNOTATION) != handle:
        raise CutoverError("cutover_incomplete", f"claim {key} is not bound to a PV of {handle}; run the cut-over "
                           f"again to finish it before finalizing {old_pv['metadata']['name']}")
