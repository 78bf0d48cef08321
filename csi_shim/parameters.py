"""What a Controller request asks for: a StorageClass's parameters, volume capabilities and a capacity range."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import grpc

from csi_shim.errors import CsiError, invalid
from csi_shim.ids import PROJECT_NAME
from csi_shim.stubs import pb
from robin.client import MiB, RobinApiError, VolumeRef, round_up_to_mib

GiB = 2**30
DEFAULT_SIZE = GiB  # a CreateVolume without required_bytes
KINDS = ("rbd", "cephfs")  # also the order ListVolumes walks them in (list tokens hold an index into it)
CSI_PREFIX = "csi.storage.k8s.io/"  # keys the sidecars add (--extra-create-metadata); only the namespace is used
PVC_NAMESPACE = CSI_PREFIX + "pvc/namespace"
COMMON_PARAMETERS = {"type", "cluster", "project", "projectQuotaBytes", "projectQuotaVolumes", "projectQuotaSnapshots"}
# How nodes mount a CephFS volume: copied into its volume context, checked there by robin.mounts at stage time.
CEPHFS_MOUNT_PARAMETERS = ("mounter", "kernelMountOptions", "fuseMountOptions")
KIND_PARAMETERS = {"rbd": {"pool", "imageFeatures"}, "cephfs": {"fs", *CEPHFS_MOUNT_PARAMETERS}}
DEFAULT_QUOTA = {"max_bytes": 100 * GiB, "max_volumes": 100, "max_snapshots": 100}
Mode = pb.VolumeCapability.AccessMode
MULTI_NODE_WRITERS = (Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER)
KNOWN_MODES = set(Mode.Mode.values()) - {Mode.UNKNOWN}


def out_of_range(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.OUT_OF_RANGE, message)


@dataclass(frozen=True)
class Parameters:
    """What a StorageClass's parameters (CreateVolume, GetCapacity, ValidateVolumeCapabilities) say."""

    kind: str
    project: str
    fields: dict  # for robin's create: cluster, and pool + features or fs (only those given)
    quota: dict  # of the project, should the shim create it
    mount: dict  # CephFS: mounter, kernelMountOptions, fuseMountOptions (those given), for the volume context

    @classmethod
    def parse(cls, parameters: Mapping[str, str], default_project: str) -> Parameters:
        given = {k: v for k, v in parameters.items() if not k.startswith(CSI_PREFIX) and v != ""}
        kind = given.get("type", "rbd")
        if kind not in KINDS:
            raise invalid(f"parameter type must be one of {', '.join(KINDS)}, not {kind!r}")
        unknown = sorted(set(given) - COMMON_PARAMETERS - KIND_PARAMETERS[kind])
        if unknown:
            known = ", ".join(sorted(COMMON_PARAMETERS | KIND_PARAMETERS[kind]))
            raise invalid(f"unknown parameters for type {kind}: {', '.join(unknown)} (known: {known})")
        project = given.get("project") or parameters.get(PVC_NAMESPACE) or default_project
        if not PROJECT_NAME.fullmatch(project):
            raise invalid(f"{project!r} cannot be a robin project: 1-63 lowercase letters, digits or '-'")
        fields = {"cluster": given.get("cluster")}
        if kind == "rbd":
            features = [f.strip() for f in given.get("imageFeatures", "").split(",") if f.strip()]
            fields.update(pool=given.get("pool"), features=features or None)
        else:
            fields["fs"] = given.get("fs")
        mount = {key: given[key] for key in CEPHFS_MOUNT_PARAMETERS if key in given}
        if mount.get("mounter", "kernel") not in ("kernel", "fuse"):
            raise invalid(f"parameter mounter must be kernel or fuse (or unset: the kernel's client where a node "
                          f"has it), not {mount['mounter']!r}")
        return cls(kind, project, {k: v for k, v in fields.items() if v}, _project_quota(given), mount)

    def mismatch(self, ref: VolumeRef, volume: dict) -> str | None:
        """Why an existing volume is not what these parameters would make (None when it is)."""
        if self.kind != ref.kind:
            return f"{ref.handle} is of type {ref.kind}, not {self.kind}"
        return self.placement_mismatch(ref, volume)

    def placement_mismatch(self, ref: VolumeRef, volume: dict) -> str | None:
        """Why `volume` is not in the cluster, pool or file system these parameters name (None when it is)."""
        for field in ("cluster", "pool", "fs"):
            if field in self.fields and volume.get(field) != self.fields[field]:
                return f"{ref.handle} has {field} {volume.get(field)!r}, not {self.fields[field]!r}"
        return None


QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
SUFFIXES = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def _project_quota(given: dict) -> dict:
    quota = dict(DEFAULT_QUOTA)
    if "projectQuotaBytes" in given:
        match = QUANTITY.fullmatch(given["projectQuotaBytes"].strip())
        if not match:
            raise invalid(f"projectQuotaBytes must be a quantity such as 100Gi, not {given['projectQuotaBytes']!r}")
        quota["max_bytes"] = math.ceil(Decimal(match[1]) * SUFFIXES[match[2]])
    for key, field in (("projectQuotaVolumes", "max_volumes"), ("projectQuotaSnapshots", "max_snapshots")):
        if key in given:
            if not given[key].strip().isdigit():
                raise invalid(f"{key} must be a whole number, not {given[key]!r}")
            quota[field] = int(given[key])
    return quota


def capability_problem(kind: str, capabilities: Iterable[pb.VolumeCapability]) -> str | None:
    """Why a volume of `kind` cannot serve one of `capabilities` (None when it serves them all)."""
    for capability in capabilities:
        access, mode = capability.WhichOneof("access_type"), capability.access_mode.mode
        if access is None:
            return "a volume capability must be block or mount"
        if mode not in KNOWN_MODES:
            return f"a volume capability needs a known access mode, not {mode}"
        if kind == "cephfs" and access == "block":
            return "a CephFS path is a file system: it cannot be a block volume"
        if kind == "rbd" and access == "mount" and mode in MULTI_NODE_WRITERS:
            # ext4/xfs on an RBD image is mounted by one node only; a raw block device can be shared.
            return (f"an RBD image with a file system cannot be {Mode.Mode.Name(mode)}: only one node may mount it "
                    "writable (use a block volume, or type cephfs)")
    return None


def capacity_range(capacity: pb.CapacityRange) -> tuple[int, int]:
    """required_bytes and limit_bytes (0: not given; an unset range is all zeros)."""
    required, limit = capacity.required_bytes, capacity.limit_bytes
    if required < 0 or limit < 0:
        raise invalid("capacity_range cannot be negative")
    if limit and limit < required:
        raise out_of_range(f"limit_bytes {limit} is below required_bytes {required}")
    return required, limit


def new_volume_size(capacity: pb.CapacityRange, source_size: int = 0) -> int:
    """Whole MiB within the range: required_bytes rounded up, at least a clone's source, DEFAULT_SIZE when neither
    says (at most the limit)."""
    required, limit = capacity_range(capacity)
    if required or source_size:
        size = max(round_up_to_mib(required), source_size)
    else:
        size = min(DEFAULT_SIZE, limit // MiB * MiB) if limit else DEFAULT_SIZE
    if size == 0 or (limit and size > limit):
        raise out_of_range(f"no size of whole MiB{' at least ' + str(source_size) if source_size else ''} fits "
                           f"the range required_bytes {required}, limit_bytes {limit}")
    return size


def size_refused(exc: RobinApiError) -> bool:
    """robin's 422 for a size it does not accept (above ROBIN_MAX_VOLUME_BYTES, below a clone's source)."""
    fields = exc.details.get("fields")
    return (exc.code == "validation_error" and isinstance(fields, dict) and bool(fields)
            and set(fields) <= {"size_bytes", "quota_bytes"})
