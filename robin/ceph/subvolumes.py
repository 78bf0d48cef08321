"""CephFS subvolumes, through the mgr's volumes module (what `ceph fs subvolume ...` asks it), idempotent like the
directory operations: robin's volume `<name>` of project `<project>` is subvolume `<name>` in subvolume group
`<project>`, marked with the volume's id in its metadata (OWNER_KEY). A subvolume with the name and another mark,
or none, is CephAlreadyExists and never touched: `fs subvolume create` of an existing subvolume succeeds and
resizes it, so robin asks first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from robin.ceph.connection import CephConnection
from robin.ceph.errors import CephAlreadyExists, CephError, CephInvalidArgument, CephNotFound
from robin.ceph.rbd_ops import Observed

OWNER_KEY = "robin.volume_id"
# The group of subvolumes made without one; the mgr refuses it by name, so robin then names none.
NO_GROUP = "_nogroup"
# `fs subvolume info`'s state of a removed subvolume whose snapshots were kept (`rm --retain-snapshots`).
SNAPSHOT_RETAINED = "snapshot-retained"


def _mgr(conn: CephConnection, prefix: str, fs_name: str, **args) -> str:
    if args.get("group_name") == NO_GROUP:
        del args["group_name"]
    return conn.mgr_command(prefix, vol_name=fs_name, **args)


def _json(conn: CephConnection, prefix: str, fs_name: str, **args):
    out = _mgr(conn, prefix, fs_name, **args)
    return json.loads(out) if out.strip() else {}


@dataclass(frozen=True)
class Info:
    """What `fs subvolume info` says of a subvolume robin uses: state ("complete", "snapshot-retained" when only
    its snapshots are left...), quota (None: unlimited), bytes used, when it was made, its path, robin's mark."""

    state: str
    quota_bytes: int | None
    used_bytes: int
    created_at: datetime | None
    path: str | None
    owner: str | None


def info(conn: CephConnection, fs_name: str, group: str, name: str) -> Info | None:
    """None when there is no such subvolume (or group)."""
    try:
        found = _json(conn, "fs subvolume info", fs_name, sub_name=name, group_name=group)
    except CephNotFound:
        return None
    quota = found.get("bytes_quota")
    return Info(found.get("state", "complete"), quota if isinstance(quota, int) and quota > 0 else None,
                int(found.get("bytes_used") or 0), _created_at(found.get("created_at")), found.get("path"),
                owner(conn, fs_name, group, name) if found.get("state") != SNAPSHOT_RETAINED else None)


def _created_at(text: str | None) -> datetime | None:
    # The mgr writes UTC without a zone, with or without microseconds.
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def owner(conn: CephConnection, fs_name: str, group: str, name: str) -> str | None:
    try:
        return _mgr(conn, "fs subvolume metadata get", fs_name, sub_name=name, key_name=OWNER_KEY,
                    group_name=group).strip() or None
    except CephNotFound:
        return None  # no such key


def mark_owner(conn: CephConnection, fs_name: str, group: str, name: str, volume_id: str) -> None:
    _mgr(conn, "fs subvolume metadata set", fs_name, sub_name=name, key_name=OWNER_KEY, value=volume_id,
         group_name=group)


def create(conn: CephConnection, fs_name: str, group: str, name: str, quota_bytes: int, volume_id: str) -> str:
    """Make (or, when it is this volume's already, resize) the subvolume, its group on demand; its path.

    A new subvolume gets a RADOS namespace of its own (`--namespace-isolated`: the mgr names it
    `fsvolumens_<name>`), which the OSD cap of its user (`authorize`) is confined to. Never asked of an existing
    one: its files written before would stay outside the namespace, out of its user's reach."""
    found = info(conn, fs_name, group, name)
    if found is not None and found.owner != volume_id:
        raise CephAlreadyExists(f"CephFS subvolume {fs_name}:{group}/{name} already exists and is not this volume",
                                details={"fs": fs_name, "group": group, "subvolume": name, "owner": found.owner})
    if found is None:
        _mgr(conn, "fs subvolumegroup create", fs_name, group_name=group)  # idempotent
    _mgr(conn, "fs subvolume create", fs_name, sub_name=name, group_name=group, size=quota_bytes,
         **({"namespace_isolated": True} if found is None else {}))
    mark_owner(conn, fs_name, group, name, volume_id)
    return getpath(conn, fs_name, group, name)


def getpath(conn: CephConnection, fs_name: str, group: str, name: str) -> str:
    return _mgr(conn, "fs subvolume getpath", fs_name, sub_name=name, group_name=group).strip()


def resize(conn: CephConnection, fs_name: str, group: str, name: str, quota_bytes: int) -> None:
    """Set the quota, lower than what is used too (as robin does for a directory: a lower quota refuses writes and
    deletes nothing), hence no `--no_shrink`."""
    _mgr(conn, "fs subvolume resize", fs_name, sub_name=name, group_name=group, new_size=str(quota_bytes))


def remove(conn: CephConnection, fs_name: str, group: str, name: str) -> None:
    """Remove the subvolume's data; idempotent. Snapshots robin did not take (robin removes its own first) are kept
    (`--retain-snapshots`): the subvolume then stays listed, in state snapshot-retained, until they are removed."""
    _mgr(conn, "fs subvolume rm", fs_name, sub_name=name, group_name=group, force=True, retain_snapshots=True)


def exists(conn: CephConnection, fs_name: str, group: str, name: str, volume_id: str) -> None:
    """Raise CephNotFound unless the subvolume is there, with its data, and is this volume's."""
    found = info(conn, fs_name, group, name)
    if found is None or found.state == SNAPSHOT_RETAINED or found.owner != volume_id:
        raise CephNotFound(f"CephFS subvolume {fs_name}:{group}/{name} is gone or is not this volume any more",
                           details={"fs": fs_name, "group": group, "subvolume": name})


def inspect(conn: CephConnection, fs_name: str, group: str, name: str) -> Observed:
    found = info(conn, fs_name, group, name)
    if found is None or found.state == SNAPSHOT_RETAINED:
        return Observed(False)
    return Observed(True, found.owner, found.quota_bytes, found.created_at)


def list_names(conn: CephConnection, fs_name: str, group: str) -> list[str]:
    """The group's subvolumes ([] when there is no such group)."""
    try:
        return [entry["name"] for entry in _json(conn, "fs subvolume ls", fs_name, group_name=group)]
    except CephNotFound:
        return []


def list_groups(conn: CephConnection, fs_name: str) -> list[str]:
    return [entry["name"] for entry in _json(conn, "fs subvolumegroup ls", fs_name)]


# --- cephx users ----------------------------------------------------------------------------------------

# The volumes module answers the key of a user it made only to a caller that names a tenant ("a caller not
# multi-tenant aware" gets ""), and refuses that user to callers of another tenant.
TENANT = "robin"


def authorize(conn: CephConnection, fs_name: str, group: str, name: str, auth_id: str) -> str:
    """The key of cephx user `client.<auth_id>`, made (or kept) with read-write caps on the subvolume only: mds
    `allow rw path=<its path>`, osd `allow rw pool=<data pool> namespace=<its namespace>` (the whole pool for a
    subvolume made without one), mon `allow r`. Idempotent: asked again, the same key. A user of that name the
    module did not make is CephPermissionDenied ("not created by mgr plugin"): robin never passes
    `--allow_existing_id`, which would add the subvolume to whatever caps that user holds."""
    return _mgr(conn, "fs subvolume authorize", fs_name, sub_name=name, auth_id=auth_id, group_name=group,
                access_level="rw", tenant_id=TENANT).strip()


def deauthorize(conn: CephConnection, fs_name: str, group: str, name: str, auth_id: str) -> None:
    """Take the subvolume's caps from the user (the module removes a user left with no caps) and evict the
    clients that mount the subvolume with it; nothing to do when the subvolume, or the module's record of the
    user, is gone. The caller removes the user itself afterwards (`auth rm`): this removes only what the module
    added."""
    for prefix in ("fs subvolume deauthorize", "fs subvolume evict"):
        try:
            _mgr(conn, prefix, fs_name, sub_name=name, auth_id=auth_id, group_name=group)
        except CephNotFound:
            return


# --- snapshots ----------------------------------------------------------------------------------

def create_snapshot(conn: CephConnection, fs_name: str, group: str, name: str, snapshot: str) -> None:
    _mgr(conn, "fs subvolume snapshot create", fs_name, sub_name=name, snap_name=snapshot, group_name=group)


def remove_snapshot(conn: CephConnection, fs_name: str, group: str, name: str, snapshot: str) -> None:
    """Idempotent (`--force`: a snapshot, or subvolume, already gone is no error)."""
    _mgr(conn, "fs subvolume snapshot rm", fs_name, sub_name=name, snap_name=snapshot, group_name=group, force=True)


def list_snapshots(conn: CephConnection, fs_name: str, group: str, name: str) -> list[str]:
    return [entry["name"] for entry in _json(conn, "fs subvolume snapshot ls", fs_name, sub_name=name,
                                             group_name=group)]


def snapshot_exists(conn: CephConnection, fs_name: str, group: str, name: str, snapshot: str) -> bool:
    try:
        return snapshot in list_snapshots(conn, fs_name, group, name)
    except CephNotFound:
        return False


# --- clones -------------------------------------------------------------------------------------------

# `fs clone status` states: a clone is pending, then in-progress, then one of these.
CLONE_COMPLETE = "complete"
CLONE_ENDED = ("failed", "canceled")


@dataclass(frozen=True)
class CloneStatus:
    state: str
    source: tuple[str, str, str] | None  # (group, subvolume, snapshot) while it is not complete
    progress: dict | None  # the mgr's progress_report (Ceph 18 and later), else None
    failure: str | None


def clone(conn: CephConnection, fs_name: str, group: str, name: str, snapshot: str, target_group: str,
          target: str) -> None:
    """Start cloning the snapshot into a new subvolume (the target group made on demand); idempotent: a clone of
    that name already started from this very snapshot is no error, any other subvolume of the name is
    CephAlreadyExists."""
    _mgr(conn, "fs subvolumegroup create", fs_name, group_name=target_group)
    try:
        _mgr(conn, "fs subvolume snapshot clone", fs_name, sub_name=name, snap_name=snapshot, target_sub_name=target,
             group_name=group, target_group_name=target_group)
    except CephAlreadyExists:
        try:
            status = clone_status(conn, fs_name, target_group, target)
        except CephError:
            status = None  # not a clone at all (ENOTSUP): someone else's subvolume
        if status is None or status.source != (group, name, snapshot):
            raise


def clone_status(conn: CephConnection, fs_name: str, group: str, name: str) -> CloneStatus | None:
    """None when there is no such subvolume."""
    try:
        status = _json(conn, "fs clone status", fs_name, clone_name=name, group_name=group)["status"]
    except CephNotFound:
        return None
    source = status.get("source")
    failure = status.get("failure")
    return CloneStatus(status.get("state", ""),
                       (source.get("group", NO_GROUP), source["subvolume"], source["snapshot"]) if source else None,
                       status.get("progress_report"),
                       failure.get("error_msg") if isinstance(failure, dict) else None)


def cancel_clone(conn: CephConnection, fs_name: str, group: str, name: str) -> None:
    """Stop a clone under way; nothing when it has ended or never began."""
    try:
        _mgr(conn, "fs clone cancel", fs_name, clone_name=name, group_name=group)
    except (CephNotFound, CephInvalidArgument):
        pass
