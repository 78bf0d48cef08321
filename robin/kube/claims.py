"""What a PersistentVolumeClaim asks of robin, checked against what its class's kind of volume can do."""
from __future__ import annotations

import math
from dataclasses import dataclass

from kubernetes.utils import parse_quantity

from robin.client import MiB, round_up_to_mib
from robin.kube.classes import ClassConfig, InvalidSpec

GiB = 2**30
PROJECT_ANNOTATION = "robin.io/project"  # on a Namespace: the robin project its claims' volumes belong to
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity ("1Gi", "500M", "1.5Gi") as bytes, rounded up."""
    return math.ceil(parse_quantity(quantity))


def format_bytes(size: int) -> str:
    """Bytes as the shortest exact quantity: 1073741824 -> "1Gi"."""
    for unit, suffix in ((2**40, "Ti"), (GiB, "Gi"), (MiB, "Mi"), (2**10, "Ki")):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def volume_name(claim: dict) -> str:
    """The robin volume and the PersistentVolume of a claim: fixed by its uid, so a retry or a second replica
    can only ever find the same one."""
    return f"pvc-{claim['metadata']['uid']}"


def claim_owner(claim: dict) -> str:
    """What robin records as the purpose of a claim's volume (its `created_for`): the claim's uid, which only
    Kubernetes chooses. The provisioner adopts or deletes a volume only when robin's record says this."""
    return f"k8s-claim:{claim['metadata']['uid']}"


def claim_key(claim: dict) -> str:
    return f"{claim['metadata']['namespace']}/{claim['metadata']['name']}"


@dataclass(frozen=True)
class ClaimRequest:
    size_bytes: int
    access_modes: tuple[str, ...]
    volume_mode: str
    clone_of: str | None  # the name of a claim in the same namespace to clone

    @classmethod
    def parse(cls, claim: dict, klass: ClassConfig) -> ClaimRequest:
        spec = claim.get("spec") or {}
        name = claim_key(claim)
        if spec.get("selector"):
            raise InvalidSpec(f"claim {name} has a selector; dynamically provisioned volumes cannot match one")
        request = cls(size_bytes=_requested_size(name, spec), access_modes=tuple(spec.get("accessModes") or ()),
                      volume_mode=spec.get("volumeMode") or "Filesystem", clone_of=_clone_source(name, spec, klass))
        request._check_modes(name, klass)
        return request

    def _check_modes(self, name: str, klass: ClassConfig) -> None:
        unknown = set(self.access_modes) - set(ACCESS_MODES)
        if not self.access_modes or unknown:
            raise InvalidSpec(f"claim {name}: access modes must be among {', '.join(ACCESS_MODES)}")
        if klass.kind == "cephfs" and self.volume_mode == "Block":
            raise InvalidSpec(f"claim {name}: a CephFS path is a file system; volumeMode Block needs an RBD class")
        if klass.kind == "rbd" and self.volume_mode == "Filesystem" and "ReadWriteMany" in self.access_modes:
            raise InvalidSpec(f"claim {name}: ReadWriteMany on an RBD image needs volumeMode Block (one ext4 or xfs "
                              "cannot be mounted by several nodes); use a CephFS class for a shared file system")


def _requested_size(name: str, spec: dict) -> int:
    resources = spec.get("resources") or {}
    requested = (resources.get("requests") or {}).get("storage")
    if not requested:
        raise InvalidSpec(f"claim {name} requests no storage")
    try:
        size = max(MiB, round_up_to_mib(quantity_bytes(requested)))  # whole MiB, as the node tools want
        limit = (resources.get("limits") or {}).get("storage")
        limit_bytes = quantity_bytes(limit) if limit else None
    except (ValueError, ArithmeticError):
        raise InvalidSpec(f"claim {name}: storage {requested!r} is not a Kubernetes quantity") from None
    if limit_bytes is not None and size > limit_bytes:
        raise InvalidSpec(f"claim {name}: {requested} rounded up to whole MiB is {size} bytes, above its limit "
                          f"of {limit}")
    return size


def _clone_source(name: str, spec: dict, klass: ClassConfig) -> str | None:
    source = spec.get("dataSourceRef") or spec.get("dataSource")
    if not source:
        return None
    kind, group = source.get("kind"), source.get("apiGroup") or ""
    if kind != "PersistentVolumeClaim" or group:
        raise InvalidSpec(f"claim {name}: robin's provisioner clones from a PersistentVolumeClaim only, not from "
                          f"{group + '/' if group else ''}{kind} (snapshots are restored through the CSI driver)")
    if source.get("namespace") and source["namespace"] != name.split("/")[0]:
        raise InvalidSpec(f"claim {name}: cannot clone a claim of another namespace")
    if klass.kind != "rbd":
        raise InvalidSpec(f"claim {name}: only RBD images can be cloned; copy the data of a CephFS path instead")
    return source["name"]
