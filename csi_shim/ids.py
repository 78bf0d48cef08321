"""How CSI names and ids map to robin's volumes and snapshots.

A volume id is `<kind>:<project>:<name>` (robin.client.VolumeRef), a snapshot id `<volume id>@<snapshot name>`.
A CSI name maps to a robin name deterministically (`robin_name`), so a retried call can only find what its first
attempt made. The plugin records each volume it makes as made for `csi:<robin name>` (robin's created_for) and acts
only on those.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from robin.client import VolumeRef, made_for

MAX_ID_BYTES = 128  # the spec's limit for a string field, ids included
ROBIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PROJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# robin names the snapshot behind a clone of a volume's current state robin-clone-<id>, and its reconciler removes
# such snapshots: a CSI name must never become one.
TEMPORARY_CLONE_SNAPSHOT = "robin-clone-"


def robin_name(csi_name: str, id_prefix: str) -> str:
    """The robin name for a CSI name: the name itself when robin accepts it and `id_prefix` + it fits in an id,
    else `csi-` + a digest of it (the same CSI name always gives the same robin name)."""
    if _usable_as_is(csi_name) and len((id_prefix + csi_name).encode()) <= MAX_ID_BYTES:
        return csi_name
    return _digest_name(csi_name)


def robin_names(csi_name: str) -> tuple[str, ...]:
    """Every robin name `robin_name` can give a CSI name, whatever the prefix: at most two."""
    return (csi_name, _digest_name(csi_name)) if _usable_as_is(csi_name) else (_digest_name(csi_name),)


def _usable_as_is(csi_name: str) -> bool:
    return bool(ROBIN_NAME.fullmatch(csi_name)) and not csi_name.startswith(TEMPORARY_CLONE_SNAPSHOT)


def _digest_name(csi_name: str) -> str:
    # 128 bits of SHA-256: `rbd:` or `cephfs:` + the longest project + `:` + 36 characters is within 128 bytes.
    return "csi-" + hashlib.sha256(csi_name.encode()).hexdigest()[:32]


def csi_owner(ref: VolumeRef) -> str:
    """What robin records as made by this plugin under the name of `ref` (its created_for)."""
    return f"csi:{ref.name}"


def not_ours(ref: VolumeRef, volume: dict, *, unrecorded_ok: bool = True) -> str | None:
    """Why the plugin may not act on `volume` (None when it made it). A volume recorded as made for nothing (made
    before robin kept that record, or by a person) is acted on when the CO names it by id: ids come from PVs and
    snapshot contents, which tenants cannot write. Adopting one by name on CreateVolume (`unrecorded_ok=False`) is
    never allowed: a name is all a CreateVolume has."""
    if made_for(volume, csi_owner(ref), unrecorded_ok=unrecorded_ok):
        return None
    return (f"{ref.handle} was not made by this CSI plugin (robin records it as made for "
            f"{volume.get('created_for') or 'nothing of Kubernetes'}); it acts only on volumes it made")


def volume_ref(kind: str, project: str, csi_name: str) -> VolumeRef:
    return VolumeRef(kind, project, robin_name(csi_name, f"{kind}:{project}:"))


def parse_volume_id(volume_id: str) -> VolumeRef | None:
    """The volume an id names, or None when it is no id of ours (so no such volume exists)."""
    try:
        ref = VolumeRef.parse(volume_id)
    except ValueError:
        return None
    return ref if PROJECT_NAME.fullmatch(ref.project) and ROBIN_NAME.fullmatch(ref.name) else None


@dataclass(frozen=True)
class SnapshotRef:
    volume: VolumeRef
    name: str

    @property
    def id(self) -> str:
        return f"{self.volume.handle}@{self.name}"

    @classmethod
    def parse(cls, snapshot_id: str) -> SnapshotRef | None:
        handle, at, name = snapshot_id.rpartition("@")
        volume = parse_volume_id(handle) if at else None
        return cls(volume, name) if volume and ROBIN_NAME.fullmatch(name) else None

