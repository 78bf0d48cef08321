"""robin's StorageClasses: the two provisioner names and what their `parameters` may say."""
from __future__ import annotations

from dataclasses import dataclass

from kubernetes.utils import parse_quantity

RBD_PROVISIONER = "robin.io/rbd"
CEPHFS_PROVISIONER = "robin.io/cephfs"
KIND_BY_PROVISIONER = {RBD_PROVISIONER: "rbd", CEPHFS_PROVISIONER: "cephfs"}
CSI_DRIVER = "csi.robin.io"  # the CSI shim's name (csi_shim/); PVs point at it by default

CSI_PREFIX = "csi.storage.k8s.io/"
COMMON_PARAMETERS = {"cluster", "volumeSource", "monitors", "userId", "userSecretName", "userSecretNamespace",
                     "projectQuotaBytes", "projectQuotaVolumes", "projectQuotaSnapshots",
                     CSI_PREFIX + "node-stage-secret-name", CSI_PREFIX + "node-stage-secret-namespace",
                     CSI_PREFIX + "node-publish-secret-name", CSI_PREFIX + "node-publish-secret-namespace"}
# How nodes mount a CephFS volume (the csi source only): copied into the PV's volume attributes.
CEPHFS_MOUNT_PARAMETERS = ("mounter", "kernelMountOptions", "fuseMountOptions")
KIND_PARAMETERS = {"rbd": {"pool", "imageFeatures", "fsType", CSI_PREFIX + "fstype"},
                   "cephfs": {"fs", *CEPHFS_MOUNT_PARAMETERS}}
VOLUME_SOURCES = ("csi", "in-tree")


class InvalidSpec(ValueError):
    """A StorageClass or a claim asks for something robin's provisioner cannot do; the message says what."""


@dataclass(frozen=True)
class ClassConfig:
    name: str
    kind: str  # "rbd" or "cephfs"
    provisioner: str
    reclaim_policy: str
    allow_expansion: bool
    mount_options: tuple[str, ...]
    parameters: dict

    @classmethod
    def parse(cls, storage_class: dict) -> ClassConfig:
        provisioner = storage_class["provisioner"]
        kind = KIND_BY_PROVISIONER[provisioner]
        parameters = dict(storage_class.get("parameters") or {})
        name = storage_class["metadata"]["name"]
        unknown = sorted(set(parameters) - COMMON_PARAMETERS - KIND_PARAMETERS[kind])
        if unknown:
            raise InvalidSpec(f"StorageClass {name} has parameters {provisioner} does not know: {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(COMMON_PARAMETERS | KIND_PARAMETERS[kind]))})")
        config = cls(name=name, kind=kind, provisioner=provisioner,
                     reclaim_policy=storage_class.get("reclaimPolicy") or "Delete",
                     allow_expansion=bool(storage_class.get("allowVolumeExpansion")),
                     mount_options=tuple(storage_class.get("mountOptions") or ()), parameters=parameters)
        config._validate()
        return config

    def _validate(self) -> None:
        if self.volume_source not in VOLUME_SOURCES:
            raise InvalidSpec(f"StorageClass {self.name}: volumeSource must be one of {', '.join(VOLUME_SOURCES)}, "
                              f"not {self.volume_source!r}")
        if self.volume_source == "in-tree":
            self._require_ceph_user()
        if self.param("mounter", "kernel") not in ("kernel", "fuse"):
            raise InvalidSpec(f"StorageClass {self.name}: mounter must be kernel or fuse (or unset: the kernel's "
                              f"client where a node has it), not {self.param('mounter')!r}")
        self.project_quota(None)  # raises on malformed numbers now rather than at the first claim

    def _require_ceph_user(self) -> None:
        """An in-tree PV names the cephx user nodes map it as. Kubernetes' own default for that is `admin`, whose
        key opens every pool of the cluster: the class must name a user (with caps for robin's pools only) and
        the Secret holding its key."""
        missing = [key for key in ("userId", "userSecretName") if not self.param(key)]
        if missing:
            raise InvalidSpec(f"StorageClass {self.name}: volumeSource in-tree needs {' and '.join(missing)}: "
                              f"userId names the Ceph user nodes use (never the admin user by default), "
                              f"userSecretName the Secret holding its key")

    def param(self, key: str, default: str | None = None) -> str | None:
        value = self.parameters.get(key)
        return value if value not in (None, "") else default

    @property
    def volume_source(self) -> str:
        return self.param("volumeSource", "csi")

    @property
    def fs_type(self) -> str:
        return self.param("fsType") or self.param(CSI_PREFIX + "fstype") or "ext4"

    @property
    def monitors(self) -> list[str]:
        return [m.strip() for m in (self.param("monitors") or "").split(",") if m.strip()]

    def mount_attributes(self) -> dict:
        """mounter, kernelMountOptions, fuseMountOptions as the class gives them, for a CSI PV's attributes."""
        return {key: self.param(key) for key in CEPHFS_MOUNT_PARAMETERS if self.param(key)}

    def volume_fields(self) -> dict:
        """What robin's create request takes from the class: cluster, and pool + features or fs."""
        fields = {"cluster": self.param("cluster")}
        if self.kind == "rbd":
            features = self.param("imageFeatures")
            fields.update(pool=self.param("pool"),
                          features=[f.strip() for f in features.split(",") if f.strip()] if features else None)
        else:
            fields["fs"] = self.param("fs")
        return {k: v for k, v in fields.items() if v is not None}

    def project_quota(self, defaults: dict | None) -> dict:
        """The quota of a project made for a namespace: the class's, else `defaults`."""
        defaults = defaults or {"max_bytes": 0, "max_volumes": 0, "max_snapshots": 0}
        try:
            quota = {"max_bytes": int(parse_quantity(self.param("projectQuotaBytes", str(defaults["max_bytes"])))),
                     "max_volumes": int(self.param("projectQuotaVolumes", str(defaults["max_volumes"]))),
                     "max_snapshots": int(self.param("projectQuotaSnapshots", str(defaults["max_snapshots"])))}
        except (ValueError, ArithmeticError) as exc:  # "inf" parses, then overflows int()
            raise InvalidSpec(f"StorageClass {self.name}: projectQuotaBytes must be a quantity (e.g. 100Gi) and "
                              f"projectQuotaVolumes, projectQuotaSnapshots whole numbers: {exc}") from None
        if min(quota.values()) < 0:
            raise InvalidSpec(f"StorageClass {self.name}: project quotas cannot be negative")
        return quota
