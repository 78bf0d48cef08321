"""A cephx user per CephFS volume: `client.robin-vol-<volume id>`, whose caps reach the volume's path only.

A directory's user is made with the monitors' `fs authorize`, a subvolume's with the manager's `fs subvolume
authorize` (which also confines its OSD cap to the subvolume's RADOS namespace). Both are idempotent as robin needs
it: asked again they answer the same key, so nothing of the key is stored by robin (the monitors' auth database
holds it) and a rerun or another replica gets what the first call made. Removed with `auth rm`, which succeeds for a
missing user (a subvolume's after `fs subvolume deauthorize` and `evict`). The key only ever travels in return
values: never in a log line, an error message or an exception's details.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from robin.ceph import subvolumes
from robin.ceph.connection import CephConnection
from robin.ceph.errors import CephAlreadyExists, CephInvalidArgument, CephPermissionDenied

log = logging.getLogger(__name__)

USER_PREFIX = "robin-vol-"


@dataclass(frozen=True)
class VolumeUser:
    """A volume's cephx user: `user_id` without `client.` (as `ceph-fuse --id` and CSI secrets' userID take it)."""

    user_id: str
    key: str

    def __repr__(self) -> str:  # never the key, should the object end up in a log line or a traceback
        return f"VolumeUser(user_id={self.user_id!r})"


def user_id(volume_id: str) -> str:
    return USER_PREFIX + volume_id


def authorize(conn: CephConnection, fs_name: str, path: str, volume_id: str) -> VolumeUser:
    """The volume's user, made if need be, with read-write caps on `path` of `fs_name` and nothing else: mds `allow
    rw fsname=<fs> path=<path>`, mon `allow r fsname=<fs>`, osd `allow rw tag cephfs data=<fs>`. A user of that
    name whose caps name another path is CephAlreadyExists: robin never widens nor moves a user's caps."""
    entity = f"client.{user_id(volume_id)}"
    try:
        answer = conn.mon_command("fs authorize", filesystem=fs_name, entity=entity, caps=[path, "rw"])
    except CephInvalidArgument as exc:
        # The monitors' EINVAL for a user whose caps differ ("already has fs capabilities that differ").
        if "differ" not in exc.message:
            raise
        raise CephAlreadyExists(f"cephx user {entity} exists with caps for another path than {fs_name}:{path}",
                                errno=exc.errno, operation=exc.operation, target=exc.target,
                                details={"user": entity}) from None
    return VolumeUser(user_id(volume_id), _key_of(answer, entity))


def authorize_subvolume(conn: CephConnection, fs_name: str, group: str, name: str, path: str,
                        volume_id: str) -> VolumeUser:
    """The subvolume's user, made if need be by the manager (subvolumes.authorize). A user of that name the manager
    did not make is one an older robin made with `fs authorize` on the subvolume's path: it keeps that user, key
    and caps (nodes mount with them), as `authorize` answers them."""
    try:
        key = subvolumes.authorize(conn, fs_name, group, name, user_id(volume_id))
    except CephPermissionDenied as exc:
        if "not created by mgr plugin" not in exc.message:
            raise
        return authorize(conn, fs_name, path, volume_id)
    if not key:
        raise CephInvalidArgument(f"fs subvolume authorize answered no key for client.{user_id(volume_id)}",
                                  operation="mgr_command", details={"user": f"client.{user_id(volume_id)}"})
    return VolumeUser(user_id(volume_id), key)


def _key_of(answer: dict | list, entity: str) -> str:
    for entry in answer if isinstance(answer, list) else [answer]:
        if entry.get("entity") == entity and entry.get("key"):
            return entry["key"]
    raise CephInvalidArgument(f"fs authorize answered no key for {entity}", operation="mon_command",
                              details={"user": entity})


def deauthorize(conn: CephConnection, volume_id: str) -> None:
    """Remove the volume's user; nothing to do when there is none. robin's Ceph user without the cap to remove it
    (an install that did not give it these caps) could not have made it either: a warning, not a failed delete."""
    entity = f"client.{user_id(volume_id)}"
    try:
        conn.mon_command("auth rm", entity=entity)
    except CephPermissionDenied as exc:
        log.warning("robin's Ceph user may not remove volume users (docs/existing-cluster.md)",
                    extra={"cluster": conn.name, "user": entity, "error": exc.message})


def deauthorize_subvolume(conn: CephConnection, fs_name: str, group: str, name: str, volume_id: str) -> None:
    """Remove the subvolume's user: the manager takes the caps it gave and evicts the clients mounted with it (so
    that its record of the user goes too), then `auth rm` removes whatever is left (a user an older robin made with
    `fs authorize`, one the manager kept with other caps)."""
    try:
        subvolumes.deauthorize(conn, fs_name, group, name, user_id(volume_id))
    except CephPermissionDenied as exc:
        log.warning("robin's Ceph user may not deauthorize subvolume users (docs/existing-cluster.md)",
                    extra={"cluster": conn.name, "user": f"client.{user_id(volume_id)}", "error": exc.message})
    deauthorize(conn, volume_id)

