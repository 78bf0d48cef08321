"""The cephx user a host mounts a CephFS path with (robin.ceph.cephx_users): made on first need, for the CSI node
(through the API) and the data gateway (in its own process), and removed with the volume (robin.volumes.kinds).

Nothing is stored: the user's name derives from the volume's id and the monitors keep its key, so asking again, after
a restart or on another replica, answers the same user and key.
"""
from __future__ import annotations

from sqlalchemy import select

from robin.auth.identity import Identity
from robin.ceph.cephx_users import VolumeUser
from robin.db import db
from robin.errors import Conflict
from robin.volumes import service as volumes
from robin.volumes.kinds import CEPHFS
from robin.volumes.models import CephfsPath, VolumeState


def node_credentials(identity: Identity, project: str, name: str) -> dict:
    """The user and key a node mounts the project's CephFS path `name` with, and what they reach. Admin and node
    tokens only: the key opens the file system's data pool to RADOS, which a tenant must never hold."""
    identity.require_node_credentials()
    with db.reading() as session:
        volume = volumes.find(session, CEPHFS, project, name)
    user = volume_user(volume)
    return {"user_id": user.user_id, "key": user.key, "cluster": volume.cluster.name, "fs": volume.fs_name,
            "path": volume.path}


# A path being made may not exist yet, one being deleted must not be mounted again; a resize changes only its quota.
UNMOUNTABLE = (VolumeState.CREATING, VolumeState.DELETING, VolumeState.DELETED, VolumeState.ERROR)


def volume_user(volume: CephfsPath) -> VolumeUser:
    """The path's user, made if need be, while the path may be mounted. A delete that ran meanwhile removed the user
    before this made it again: seen on the row afterwards, the user is removed once more and the answer is 409."""
    _require_mountable(volume.name, volume.state)
    conn = volumes.ceph_connection(volume)
    user = CEPHFS.authorize(conn, volume)
    try:
        _require_mountable(volume.name, _state(volume.id))
    except Conflict:
        CEPHFS.deauthorize(conn, volume)
        raise
    return user


def _require_mountable(name: str, state: VolumeState | None) -> None:
    if state is None or state in UNMOUNTABLE:
        now = state.value if state else "deleted"
        raise Conflict(f"{CEPHFS.noun} {name!r} is {now}: it cannot be mounted now; retry once it is available",
                       code="volume_busy", details={"state": now})


def _state(volume_id: str) -> VolumeState | None:
    with db.reading() as session:
        return session.scalar(select(CephfsPath.state).where(CephfsPath.id == volume_id))
