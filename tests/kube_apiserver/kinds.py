"""Per-kind behaviour: defaults and validation on create/update, and the controllers Kubernetes itself
runs for these kinds (PV binding, PVC/PV protection finalizers, namespace deletion)."""
from __future__ import annotations

import copy
import re

from .errors import ApiError, invalid
from .resources import NAMESPACES, PVCS, PVS, RESOURCES, STORAGE_CLASSES

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate_name(rt, name: str) -> None:
    if rt is NAMESPACES:
        ok = len(name) <= 63 and _LABEL.match(name)
    else:
        ok = len(name) <= 253 and _SUBDOMAIN.match(name)
    if not ok:
        raise invalid(rt, name, [("FieldValueInvalid", "metadata.name",
                                  f'Invalid value: "{name}": a lowercase RFC 1123 '
                                  f'{"label" if rt is NAMESPACES else "subdomain"} must consist of lower case '
                                  "alphanumeric characters, '-' or '.'")])


def _add_finalizer(obj: dict, finalizer: str) -> None:
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if finalizer not in finalizers:
        finalizers.append(finalizer)


def prepare_create(store, rt, obj: dict) -> None:
    """Defaults and validation of a new object (in place), as the real API server's strategies do."""
    name = obj["metadata"]["name"]
    if rt is NAMESPACES:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    elif rt is PVCS:
        spec = obj.setdefault("spec", {})
        causes = []
        if not spec.get("accessModes"):
            causes.append(("FieldValueRequired", "spec.accessModes",
                           "Required value: at least 1 access mode is required"))
        if not (spec.get("resources") or {}).get("requests", {}).get("storage"):
            causes.append(("FieldValueRequired", "spec.resources[storage]", "Required value"))
        if causes:
            raise invalid(rt, name, causes)
        spec.setdefault("volumeMode", "Filesystem")
        if "storageClassName" not in spec:
            for sc in store.objects[STORAGE_CLASSES.key].values():
                if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                    spec["storageClassName"] = sc["metadata"]["name"]
                    break
        obj["status"] = {"phase": "Pending"}
        _add_finalizer(obj, PVC_PROTECTION)
    elif rt is PVS:
        spec = obj.setdefault("spec", {})
        causes = []
        if not (spec.get("capacity") or {}).get("storage"):
            causes.append(("FieldValueRequired", "spec.capacity", "Required value"))
        if not spec.get("accessModes"):
            causes.append(("FieldValueRequired", "spec.accessModes", "Required value"))
        if causes:
            raise invalid(rt, name, causes)
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")
        obj["status"] = {"phase": "Pending"}
        _add_finalizer(obj, PV_PROTECTION)
    elif rt is STORAGE_CLASSES:
        if not obj.get("provisioner"):
            raise invalid(rt, name, [("FieldValueRequired", "provisioner", "Required value")])
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")


def prepare_update(rt, old: dict, new: dict) -> None:
    """Validation of an update of the main resource (not a subresource)."""
    name = old["metadata"]["name"]
    if rt is NAMESPACES:
        new["spec"] = copy.deepcopy(old.get("spec", {}))  # only the finalize subresource changes spec
    elif rt is PVCS:
        old_spec, new_spec = copy.deepcopy(old.get("spec", {})), copy.deepcopy(new.get("spec", {}))
        for spec in (old_spec, new_spec):
            (spec.get("resources") or {}).pop("requests", None)
        if not old_spec.get("volumeName"):
            old_spec["volumeName"] = new_spec.get("volumeName")
            old_spec = {k: v for k, v in old_spec.items() if v is not None}
        if old_spec != new_spec:
            raise invalid(rt, name, [("FieldValueForbidden", "spec", "Forbidden: spec is immutable after creation "
                                      "except resources.requests and volumeAttributesClassName for bound claims")])
    elif rt is STORAGE_CLASSES:
        for field in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
            if old.get(field) != new.get(field):
                raise invalid(rt, name, [("FieldValueForbidden", field, f"Forbidden: updates to {field} are "
                                          "forbidden.")])


def blocking_finalizers(rt, obj: dict) -> list[str]:
    finalizers = list(obj["metadata"].get("finalizers") or [])
    if rt is NAMESPACES:
        finalizers += (obj.get("spec") or {}).get("finalizers") or []
    return finalizers


def check_namespace(store, rt, namespace: str, name: str) -> None:
    ns = store.objects[NAMESPACES.key].get(("", namespace))
    if ns is None:
        raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                       {"name": namespace, "kind": "namespaces"})
    if ns["metadata"].get("deletionTimestamp"):
        raise ApiError(403, "Forbidden", f'{rt.group_resource} "{name}" is forbidden: unable to create new content '
                       f"in namespace {namespace} because it is being terminated", {"name": name, "kind": rt.plural})


# --- controllers: each returns True when it changed something ------------------------------------------------

def _claim_ref_names(pv: dict, pvc: dict) -> bool:
    ref = (pv.get("spec") or {}).get("claimRef")
    meta = pvc["metadata"]
    return bool(ref) and ref.get("namespace") == meta["namespace"] and ref.get("name") == meta["name"] and (
        not ref.get("uid") or ref["uid"] == meta["uid"])


def pv_controller(store) -> bool:
    """The binding part of kube-controller-manager's PV controller: a PVC and the PV naming it (by the PVC's
    spec.volumeName or the PV's spec.claimRef) are bound; phases Pending/Bound/Lost and Available/Bound/Released."""
    changed = False
    pvcs, pvs = store.objects[PVCS.key], store.objects[PVS.key]
    for pvc in list(pvcs.values()):
        volume = pvc["spec"].get("volumeName")
        pv = pvs.get(("", volume)) if volume else next(
            (p for p in pvs.values() if _claim_ref_names(p, pvc) and not p["metadata"].get("deletionTimestamp")), None)
        if pv is None:
            if volume and pvc["status"].get("phase") == "Bound":
                new = copy.deepcopy(pvc)
                new["status"]["phase"] = "Lost"
                changed |= store.save(PVCS, pvc, new)
            continue
        ref = pv["spec"].get("claimRef")
        if ref and not _claim_ref_names(pv, pvc):
            continue  # the volume belongs to another claim: stay Pending
        new_pv = copy.deepcopy(pv)
        if not ref or not ref.get("uid"):
            new_pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": pvc["metadata"]["namespace"],
                                          "name": pvc["metadata"]["name"], "uid": pvc["metadata"]["uid"],
                                          "apiVersion": "v1", "resourceVersion": pvc["metadata"]["resourceVersion"]}
        new_pv.setdefault("status", {})["phase"] = "Bound"
        changed |= store.save(PVS, pv, new_pv)
        new_pvc = copy.deepcopy(pvc)
        annotations = new_pvc["metadata"].setdefault("annotations", {})
        if not volume:
            new_pvc["spec"]["volumeName"] = pv["metadata"]["name"]
            annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
        annotations["pv.kubernetes.io/bind-completed"] = "yes"
        new_pvc["status"].update({"phase": "Bound", "accessModes": pv["spec"].get("accessModes", []),
                                  "capacity": pv["spec"].get("capacity", {})})
        changed |= store.save(PVCS, pvc, new_pvc)
    for pv in list(pvs.values()):
        ref = pv["spec"].get("claimRef")
        phase = pv.get("status", {}).get("phase")
        if not ref:
            desired = "Failed" if phase == "Failed" else "Available"
        else:
            pvc = pvcs.get((ref.get("namespace", ""), ref.get("name", "")))
            bound = pvc is not None and _claim_ref_names(pv, pvc)
            if bound and pvc["spec"].get("volumeName") == pv["metadata"]["name"]:
                desired = "Bound"
            elif ref.get("uid"):
                desired = "Released"
            else:
                desired = "Available"  # pre-bound to a claim that does not exist yet
        if phase != desired:
            new = copy.deepcopy(pv)
            new.setdefault("status", {})["phase"] = desired
            changed |= store.save(PVS, pv, new)
    return changed


def protection_controller(store) -> bool:
    """Removes kubernetes.io/pvc-protection from deleted PVCs (no pod uses them here) and
    kubernetes.io/pv-protection from deleted PVs that are not Bound."""
    changed = False
    for rt, finalizer in ((PVCS, PVC_PROTECTION), (PVS, PV_PROTECTION)):
        for obj in list(store.objects[rt.key].values()):
            meta = obj["metadata"]
            if not meta.get("deletionTimestamp") or finalizer not in (meta.get("finalizers") or []):
                continue
            if rt is PVS and obj.get("status", {}).get("phase") == "Bound":
                continue
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != finalizer]
            changed |= store.save(rt, obj, new)
    return changed


def namespace_controller(store) -> bool:
    """Deletes everything in a terminating namespace, then the namespace once it is empty."""
    changed = False
    for ns in list(store.objects[NAMESPACES.key].values()):
        if not ns["metadata"].get("deletionTimestamp"):
            continue
        name, remaining = ns["metadata"]["name"], 0
        for rt in RESOURCES:
            if not rt.namespaced:
                continue
            for (namespace, _), obj in list(store.objects[rt.key].items()):
                if namespace != name:
                    continue
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    store.mark_deleted(rt, obj)
                    changed = True
        if remaining == 0 and (ns.get("spec") or {}).get("finalizers"):
            new = copy.deepcopy(ns)
            new["spec"]["finalizers"] = []
            changed |= store.save(NAMESPACES, ns, new)
    return changed


CONTROLLERS = (protection_controller, pv_controller, namespace_controller)
