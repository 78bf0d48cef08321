"""Per-kind behaviour: defaults and validation on create/update, and the admission checks of the real API server
(the controllers Kubernetes runs for these kinds are in `controllers`)."""
from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import re
from decimal import Decimal

from kubernetes.utils import parse_quantity

from . import schemas
from .errors import ApiError, bad_request, forbidden, invalid
from .resources import CONFIG_MAPS, NAMESPACES, PODS, PVCS, PVS, SECRETS, STORAGE_CLASSES

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_SECRET_SIZE = 1024 * 1024  # bytes of data, for Secrets and ConfigMaps alike


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
        quantity(spec["resources"]["requests"]["storage"])
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
        _validate_volume(rt, name, spec)
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")
        obj["status"] = {"phase": "Pending"}
        _add_finalizer(obj, PV_PROTECTION)
    elif rt is PODS:
        spec = obj.setdefault("spec", {})
        _validate_pod_spec(rt, name, spec)
        _default_pod_spec(spec)
        obj["status"] = {"phase": "Pending"}  # the status given on create is dropped, as podStrategy does
    elif rt is SECRETS:
        _prepare_secret(rt, obj)
    elif rt is CONFIG_MAPS:
        _validate_config_map(rt, obj)
    elif rt is STORAGE_CLASSES:
        if not obj.get("provisioner"):
            raise invalid(rt, name, [("FieldValueRequired", "provisioner", "Required value")])
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")


def prepare_update(store, rt, old: dict, new: dict) -> None:
    """Validation and admission of an update of the main resource (not a subresource)."""
    name = old["metadata"]["name"]
    if rt is NAMESPACES:
        new["spec"] = copy.deepcopy(old.get("spec", {}))  # only the finalize subresource changes spec
    elif rt is PVCS:
        _validate_claim_update(rt, old, new)
        _admit_claim_resize(store, rt, old, new)
    elif rt is PVS:
        _validate_volume_update(rt, old, new)
    elif rt is PODS:
        _validate_pod_update(rt, old, new)
    elif rt is SECRETS:
        _prepare_secret(rt, new)
        if new["type"] != old["type"]:
            raise invalid(rt, name, [("FieldValueInvalid", "type", f'Invalid value: "{new["type"]}": field is '
                                      "immutable")])
        _check_immutable_data(rt, old, new, ("data",))
    elif rt is CONFIG_MAPS:
        _validate_config_map(rt, new)
        _check_immutable_data(rt, old, new, ("data", "binaryData"))
    elif rt is STORAGE_CLASSES:
        for field in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
            if old.get(field) != new.get(field):
                raise invalid(rt, name, [("FieldValueForbidden", field, f"Forbidden: updates to {field} are "
                                          "forbidden.")])


def _validate_volume(rt, name: str, spec: dict) -> None:
    """ValidatePersistentVolumeSpec, the part robin meets: a capacity, access modes and exactly one volume source."""
    causes = []
    if not (spec.get("capacity") or {}).get("storage"):
        causes.append(("FieldValueRequired", "spec.capacity", "Required value"))
    if not spec.get("accessModes"):
        causes.append(("FieldValueRequired", "spec.accessModes", "Required value"))
    sources = [source for source in schemas.volume_sources() if spec.get(source) is not None]
    if not sources:
        causes.append(("FieldValueRequired", "spec", "Required value: must specify a volume type"))
    causes += [("FieldValueForbidden", f"spec.{source}", "Forbidden: may not specify more than 1 volume type")
               for source in sources[1:]]
    if causes:
        raise invalid(rt, name, causes)


def _validate_volume_update(rt, old: dict, new: dict) -> None:
    """ValidatePersistentVolumeUpdate: a valid spec whose volume source and volume mode stay as created (capacity,
    access modes, claimRef, class, reclaim policy and mount options may change)."""
    name = old["metadata"]["name"]
    old_spec, new_spec = old.get("spec") or {}, new.setdefault("spec", {})
    new_spec.setdefault("volumeMode", "Filesystem")
    _validate_volume(rt, name, new_spec)
    causes = []
    if {s: old_spec.get(s) for s in schemas.volume_sources()} != {s: new_spec.get(s) for s in schemas.volume_sources()}:
        causes.append(("FieldValueForbidden", "spec.persistentvolumesource", "Forbidden: spec.persistentvolumesource "
                       "is immutable after creation"))
    if old_spec.get("volumeMode") != new_spec.get("volumeMode"):
        causes.append(("FieldValueInvalid", "spec.volumeMode", f'Invalid value: "{new_spec.get("volumeMode")}": '
                       "field is immutable"))
    if causes:
        raise invalid(rt, name, causes)


def _decoded(kind: str, field: str, key: str, value) -> bytes:
    """A []byte field's value, or the 400 that decoding the JSON body into the Go struct gives."""
    if isinstance(value, str):
        with contextlib.suppress(binascii.Error):
            return base64.b64decode(value, validate=True)
    raise bad_request(f'{kind} in version "v1" cannot be handled as a {kind}: illegal base64 data in '
                      f"{field}[{key}]")


def _config_key_causes(field: str, keys) -> list:
    return [("FieldValueInvalid", f"{field}[{key}]", f'Invalid value: "{key}": a valid config key must consist of '
             "alphanumeric characters, '-', '_' or '.'") for key in keys if not _CONFIG_KEY.match(key)]


def _prepare_secret(rt, obj: dict) -> None:
    """The Secret strategy: stringData is write-only and wins over data on the same key; the type defaults to
    Opaque; keys are config keys; the data is at most 1 MiB."""
    name = obj["metadata"]["name"]
    data = dict(obj.get("data") or {})
    sizes = {key: len(_decoded("Secret", "data", key, value)) for key, value in data.items()}
    for key, value in (obj.pop("stringData", None) or {}).items():
        raw = str(value).encode()
        data[key], sizes[key] = base64.b64encode(raw).decode(), len(raw)
    if data:
        obj["data"] = data
    else:
        obj.pop("data", None)
    obj["type"] = obj.get("type") or "Opaque"
    causes = _config_key_causes("data", data)
    if sum(sizes.values()) > MAX_SECRET_SIZE:
        causes.append(("FieldValueTooLong", "data", f"Too long: must have at most {MAX_SECRET_SIZE} bytes"))
    if causes:
        raise invalid(rt, name, causes)


def _validate_config_map(rt, obj: dict) -> None:
    """ValidateConfigMap: keys are config keys, unique across data and binaryData; at most 1 MiB in all."""
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    size = sum(len(str(value).encode()) for value in data.values())
    size += sum(len(_decoded("ConfigMap", "binaryData", key, value)) for key, value in binary.items())
    causes = _config_key_causes("data", data) + _config_key_causes("binaryData", binary)
    causes += [("FieldValueInvalid", f"data[{key}]", f'Invalid value: "{key}": duplicate of key present in '
                "binaryData") for key in data if key in binary]
    if size > MAX_SECRET_SIZE:
        causes.append(("FieldValueTooLong", "", f"Too long: must have at most {MAX_SECRET_SIZE} bytes"))
    if causes:
        raise invalid(rt, obj["metadata"]["name"], causes)


def _check_immutable_data(rt, old: dict, new: dict, fields: tuple[str, ...]) -> None:
    """An object marked immutable keeps its data and the mark."""
    if not old.get("immutable"):
        return
    causes = [] if new.get("immutable") else [
        ("FieldValueForbidden", "immutable", "Forbidden: field is immutable when `immutable` is set")]
    causes += [("FieldValueForbidden", field, "Forbidden: field is immutable when `immutable` is set")
               for field in fields if old.get(field) != new.get(field)]
    if causes:
        raise invalid(rt, old["metadata"]["name"], causes)


def _list_field(spec: dict, field: str) -> list:
    value = spec.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                          f"PodSpec.spec.{field} of type array")  # as decoding fails in the real server
    return value


def _validate_pod_spec(rt, name: str, spec: dict) -> None:
    """The part of ValidatePodSpec tests meet: containers (at least one, each with a name and an image) and the
    volumes (each with a name; a persistentVolumeClaim one with a claimName)."""
    causes = []
    containers = _list_field(spec, "containers")
    if not containers:
        causes.append(("FieldValueRequired", "spec.containers", "Required value"))
    for field, entries in (("containers", containers), ("initContainers", _list_field(spec, "initContainers"))):
        for i, container in enumerate(entries):
            container = container if isinstance(container, dict) else {}
            for required in ("name", "image"):
                if not container.get(required):
                    causes.append(("FieldValueRequired", f"spec.{field}[{i}].{required}", "Required value"))
    for i, volume in enumerate(_list_field(spec, "volumes")):
        volume = volume if isinstance(volume, dict) else {}
        if not volume.get("name"):
            causes.append(("FieldValueRequired", f"spec.volumes[{i}].name", "Required value"))
        claim = volume.get("persistentVolumeClaim")
        if claim is not None and not (claim or {}).get("claimName"):
            causes.append(("FieldValueRequired", f"spec.volumes[{i}].persistentVolumeClaim.claimName",
                           "Required value"))
    if causes:
        raise invalid(rt, name, causes)


def _default_pod_spec(spec: dict) -> None:
    """Some of SetDefaults_PodSpec and SetDefaults_Container."""
    for field, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"),
                         ("schedulerName", "default-scheduler"), ("terminationGracePeriodSeconds", 30)):
        spec.setdefault(field, value)
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        image = container["image"]
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        container.setdefault("imagePullPolicy", "IfNotPresent" if tagged and not image.endswith(":latest")
                             else "Always")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")


_POD_UPDATABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _validate_pod_update(rt, old: dict, new: dict) -> None:
    """ValidatePodUpdate: a pod's spec is immutable but for its containers' images and a few fields."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    _validate_pod_spec(rt, old["metadata"]["name"], new_spec)

    def fixed(spec: dict) -> dict:
        spec = {k: v for k, v in copy.deepcopy(spec).items() if k not in _POD_UPDATABLE}
        for field in ("containers", "initContainers"):
            for container in spec.get(field) or []:
                if isinstance(container, dict):
                    container.pop("image", None)
        return spec

    _default_pod_spec(new_spec)
    if fixed(old_spec) != fixed(new_spec):
        raise invalid(rt, old["metadata"]["name"], [(
            "FieldValueForbidden", "spec", "Forbidden: pod updates may not change fields other than "
            "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
            "`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
            "(allow it to be set to 1 if it was previously negative)")])


def quantity(value) -> Decimal:
    """A resource quantity as a number (a missing one is zero, as in Go); a malformed one fails the request as
    decoding it does in the real API server."""
    if value is None:
        return Decimal(0)
    try:
        return parse_quantity(value)
    except ValueError:
        raise bad_request(f"quantities must match the regular expression "
                          f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}") from None


def _requested_storage(pvc: dict):
    return (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


def _with_requested_storage(spec: dict, size) -> dict:
    """A copy of `spec` whose requests.storage (if it has requests) is `size`: specs compare by quantity."""
    spec = copy.deepcopy(spec)
    requests = (spec.get("resources") or {}).get("requests")
    if isinstance(requests, dict):
        requests["storage"] = size
    return spec


def _validate_claim_update(rt, old: dict, new: dict) -> None:
    """ValidatePersistentVolumeClaimUpdate: the spec is immutable but for setting volumeName once and, while the
    claim is Bound, requests.storage, which may go down (to recover from a failed expansion) but not to or below
    status.capacity."""
    old_spec, new_spec = old.get("spec", {}), new.get("spec", {})
    old_size, new_size = quantity(_requested_storage(old)), quantity(_requested_storage(new))
    bound = (old.get("status") or {}).get("phase") == "Bound"
    old_rest = _with_requested_storage(old_spec, old_size)
    new_rest = _with_requested_storage(new_spec, old_size if bound else new_size)
    if not old_rest.get("volumeName"):
        old_rest["volumeName"] = new_rest.get("volumeName")
        old_rest = {k: v for k, v in old_rest.items() if v is not None}
    causes = []
    if old_rest != new_rest:
        causes.append(("FieldValueForbidden", "spec", "Forbidden: spec is immutable after creation except "
                       "resources.requests and volumeAttributesClassName for bound claims"))
    status_size = quantity(((old.get("status") or {}).get("capacity") or {}).get("storage"))
    if new_size < old_size and new_size <= status_size:
        causes.append(("FieldValueForbidden", "spec.resources.requests.storage",
                       "Forbidden: field can not be less than status.capacity"))
    if causes:
        raise invalid(rt, old["metadata"]["name"], causes)


def claim_class(pvc: dict) -> str:
    annotations = pvc["metadata"].get("annotations") or {}
    return annotations.get(BETA_CLASS_ANNOTATION) or (pvc.get("spec") or {}).get("storageClassName") or ""


def _admit_claim_resize(store, rt, old: dict, new: dict) -> None:
    """The PersistentVolumeClaimResize admission plugin: a claim grows only if its StorageClass allows volume
    expansion. (That it is Bound was validated before, as validation runs before validating admission.)"""
    if quantity(_requested_storage(new)) <= quantity(_requested_storage(old)):
        return
    class_name = claim_class(new)
    sc = store.objects[STORAGE_CLASSES.key].get(("", class_name)) if class_name == claim_class(old) else None
    if sc is None or sc.get("allowVolumeExpansion") is not True:
        raise forbidden(rt, old["metadata"]["name"], "only dynamically provisioned pvc can be resized and the "
                                                     "storageclass that provisions the pvc must support resize")


def deletion_grace_period(rt, obj: dict, options: dict) -> int:
    """Seconds a DELETE gives the object to terminate (the pod strategy's CheckGracefulDelete), 0 to delete it now:
    a scheduled pod that has not finished gets its gracePeriodSeconds (default: its terminationGracePeriodSeconds);
    unscheduled and finished pods, and every other kind, go at once."""
    if rt is not PODS:
        return 0
    spec, phase = obj.get("spec") or {}, (obj.get("status") or {}).get("phase")
    if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None or grace < 0:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return max(int(grace), 0)


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
        raise forbidden(rt, name, f"unable to create new content in namespace {namespace} because it is being "
                                  "terminated")
