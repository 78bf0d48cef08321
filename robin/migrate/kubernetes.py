"""The Kubernetes side of a GlusterFS migration: which PersistentVolumes are GlusterFS ones, where their data is
(the servers and the volume), which claim and robin project they belong to, and what the robin volume taking their
data is called.

It goes through `robin.kube`'s `Kube` (plain dicts, rate limited, with timeouts), so the migration speaks to
the API server exactly as the provisioner does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robin.kube.claims import PROJECT_ANNOTATION, quantity_bytes
from robin.kube.client import Kube, KubeError
from robin.migrate.errors import MigrationError
from robin.migrate.names import volume_name

DESTINATION_PREFIX = "migrated-"


class KubeMigrationError(MigrationError):
    """A migration step on Kubernetes objects cannot go on."""


@dataclass(frozen=True)
class GlusterPv:
    name: str
    claim_namespace: str | None  # the claim its claimRef names; None when it names none
    claim_name: str | None
    claim_uid: str | None
    capacity_bytes: int
    access_modes: tuple[str, ...]
    volume_mode: str
    servers: tuple[str, ...]  # the GlusterFS servers, from the Endpoints object the PV names
    volume: str  # the GlusterFS volume ...
    subdir: str  # ... and the directory in it the PV mounts ("" for its root)
    read_only: bool
    project: str | None  # the robin project the claim's namespace maps to; None without a claim
    storage_class_name: str | None
    pv: dict = field(repr=False, compare=False)  # the object as read

    @property
    def claim_key(self) -> str | None:
        return f"{self.claim_namespace}/{self.claim_name}" if self.claim_name else None


def gluster_pvs(kube: Kube, names: list[str] | None = None) -> list[GlusterPv]:
    """The PVs `names` (each must exist and be a GlusterFS one), or every GlusterFS PV when `names` is None."""
    if names is None:
        listed = kube.call(kube.core.list_persistent_volume)["items"]
        pvs = [pv for pv in listed if (pv.get("spec") or {}).get("glusterfs")]
    else:
        pvs = [_read_gluster_pv(kube, name) for name in names]
    return [describe(kube, pv) for pv in sorted(pvs, key=lambda pv: pv["metadata"]["name"])]


def _read_gluster_pv(kube: Kube, name: str) -> dict:
    try:
        pv = kube.get_volume(name)
    except KubeError as exc:
        if exc.status == 404:
            raise KubeMigrationError("pv_not_found", f"PersistentVolume {name} does not exist") from None
        raise
    if not (pv.get("spec") or {}).get("glusterfs"):
        raise KubeMigrationError("not_gluster_pv", f"PersistentVolume {name} has no glusterfs volume source; only "
                                                   f"GlusterFS volumes can be migrated")
    return pv


def describe(kube: Kube, pv: dict) -> GlusterPv:
    """A GlusterFS PV as the migration needs it: reads its Endpoints and its claim's Namespace."""
    spec, name = pv["spec"], pv["metadata"]["name"]
    source = spec["glusterfs"]
    ref = spec.get("claimRef") or {}
    namespace = ref.get("namespace") if ref.get("name") else None
    volume, _, subdir = (source.get("path") or "").partition("/")
    if not volume:
        raise KubeMigrationError("not_gluster_pv", f"PersistentVolume {name}: spec.glusterfs.path names no volume")
    capacity = (spec.get("capacity") or {}).get("storage")
    return GlusterPv(
        name=name, claim_namespace=namespace, claim_name=ref.get("name") or None,
        claim_uid=ref.get("uid") or None, capacity_bytes=quantity_bytes(capacity) if capacity else 0,
        access_modes=tuple(spec.get("accessModes") or ()), volume_mode=spec.get("volumeMode") or "Filesystem",
        servers=_servers(kube, name, source, namespace), volume=volume, subdir=subdir.strip("/"),
        read_only=bool(source.get("readOnly")), project=_project(kube, namespace) if namespace else None,
        storage_class_name=spec.get("storageClassName") or None, pv=pv)


def _servers(kube: Kube, pv_name: str, source: dict, claim_namespace: str | None) -> tuple[str, ...]:
    """The addresses of the Endpoints object the PV names: in endpointsNamespace, else (Kubernetes' own rule, for
    PVs made before that field existed) in the namespace of the claim using it."""
    endpoints, namespace = source.get("endpoints"), source.get("endpointsNamespace") or claim_namespace
    if not endpoints:
        raise KubeMigrationError("not_gluster_pv", f"PersistentVolume {pv_name}: spec.glusterfs names no endpoints")
    if not namespace:
        raise KubeMigrationError("endpoints_not_found", f"PersistentVolume {pv_name}: spec.glusterfs has no "
                                 f"endpointsNamespace and no claim, so its Endpoints {endpoints} cannot be found")
    try:
        found = kube.call(kube.core.read_namespaced_endpoints, endpoints, namespace)
    except KubeError as exc:
        if exc.status == 404:
            raise KubeMigrationError("endpoints_not_found", f"PersistentVolume {pv_name}: its Endpoints "
                                     f"{namespace}/{endpoints} do not exist; recreate them with the GlusterFS "
                                     f"servers' addresses") from None
        raise
    addresses = []
    for subset in found.get("subsets") or ():
        for address in subset.get("addresses") or ():
            host = address.get("ip") or address.get("hostname")
            if host and host not in addresses:
                addresses.append(host)
    if not addresses:
        raise KubeMigrationError("endpoints_empty", f"PersistentVolume {pv_name}: its Endpoints "
                                 f"{namespace}/{endpoints} list no address; add the GlusterFS servers' addresses")
    return tuple(addresses)


def _project(kube: Kube, namespace: str) -> str:
    """The provisioner's rule: the Namespace's robin.io/project annotation, else the namespace's name (also when the
    namespace is gone: a Released PV may outlive it)."""
    try:
        found = kube.call(kube.core.read_namespace, namespace)
    except KubeError as exc:
        if exc.status == 404:
            return namespace
        raise
    return (found["metadata"].get("annotations") or {}).get(PROJECT_ANNOTATION) or namespace


def destination_name(pv_name: str) -> str:
    """The robin volume (and the new PV) taking a migrated PV's data: `migrated-<pv name>`."""
    return volume_name(DESTINATION_PREFIX + pv_name)
