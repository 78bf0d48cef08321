"""The PersistentVolume of a provisioned claim, and how the provisioner recognises its own."""
from __future__ import annotations

from robin.client import VolumeRef, volume_context
from robin.kube.claims import ClaimRequest, format_bytes
from robin.kube.classes import CSI_DRIVER, CSI_PREFIX, KIND_BY_PROVISIONER, ClassConfig, InvalidSpec

PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
VOLUME_ANNOTATION = "robin.io/volume"  # the VolumeRef handle, on every PV the provisioner made
PROJECT_LABEL = "robin.io/project"
# On a PV: deleting the object waits until the provisioner has deleted (Delete) or let go of (Retain) the volume.
VOLUME_FINALIZER = "robin.io/volume"
# On a claim while its volume is being made: deleting the claim then waits until the volume is gone again,
# so a claim deleted before its PV exists can never leave a volume nobody knows about.
CLAIM_FINALIZER = "robin.io/provisioning"


def our_volume(pv: dict | None) -> VolumeRef | None:
    """The robin volume behind a PV this provisioner made, else None."""
    if pv is None:
        return None
    annotations = pv["metadata"].get("annotations") or {}
    if annotations.get(PROVISIONED_BY) not in KIND_BY_PROVISIONER or VOLUME_ANNOTATION not in annotations:
        return None
    try:
        return VolumeRef.parse(annotations[VOLUME_ANNOTATION])
    except ValueError:
        return None


def build(claim: dict, klass: ClassConfig, request: ClaimRequest, ref: VolumeRef, volume: dict, size: int,
          cluster: dict) -> dict:
    """The PV for `claim`, pre-bound to it by uid, for robin's answer `volume` on `cluster` (robin's cluster
    detail: fsid, monitors)."""
    meta = claim["metadata"]
    spec = {"capacity": {"storage": format_bytes(size)}, "accessModes": list(request.access_modes),
            "persistentVolumeReclaimPolicy": klass.reclaim_policy, "storageClassName": klass.name,
            "volumeMode": request.volume_mode,
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]}}
    if klass.mount_options and request.volume_mode == "Filesystem":
        spec["mountOptions"] = list(klass.mount_options)
    monitors = klass.monitors or list(cluster.get("monitors") or ())
    if klass.volume_source == "in-tree":
        spec.update(_in_tree_source(claim, klass, request, volume, monitors))
    else:
        spec["csi"] = _csi_source(klass, request, ref, volume, cluster, monitors)
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": ref.name, "labels": {PROJECT_LABEL: ref.project},
                         "annotations": {PROVISIONED_BY: klass.provisioner, VOLUME_ANNOTATION: ref.handle},
                         "finalizers": [VOLUME_FINALIZER]},
            "spec": spec}


def _csi_source(klass: ClassConfig, request: ClaimRequest, ref: VolumeRef, volume: dict, cluster: dict,
                monitors: list[str]) -> dict:
    source = {"driver": CSI_DRIVER, "volumeHandle": ref.handle,
              "volumeAttributes": {**volume_context(ref, volume, cluster, monitors), **klass.mount_attributes()}}
    if ref.kind == "rbd" and request.volume_mode == "Filesystem":
        source["fsType"] = klass.fs_type
    for secret in ("node-stage", "node-publish"):
        name = klass.param(f"{CSI_PREFIX}{secret}-secret-name")
        if name:
            key = "nodeStageSecretRef" if secret == "node-stage" else "nodePublishSecretRef"
            source[key] = {"name": name, "namespace": klass.param(f"{CSI_PREFIX}{secret}-secret-namespace",
                                                                  "default")}
    return source


def _in_tree_source(claim: dict, klass: ClassConfig, request: ClaimRequest, volume: dict,
                    monitors: list[str]) -> dict:
    """Kubernetes' own rbd / cephfs volume sources (older clusters; the Wayne platform reads them)."""
    if not monitors:
        raise InvalidSpec(f"StorageClass {klass.name}: no Ceph monitor addresses are known for the in-tree volume "
                          f"source; set the parameter monitors")
    secret = {"name": klass.param("userSecretName"),
              "namespace": klass.param("userSecretNamespace", claim["metadata"]["namespace"])}
    user = klass.param("userId")  # required by ClassConfig: never Kubernetes' default, admin
    if klass.kind == "rbd":
        source = {"monitors": monitors, "pool": volume["pool"], "image": volume["name"], "user": user,
                  "secretRef": secret}
        if request.volume_mode == "Filesystem":
            source["fsType"] = klass.fs_type
        return {"rbd": source}
    return {"cephfs": {"monitors": monitors, "path": volume["path"], "user": user, "secretRef": secret}}
