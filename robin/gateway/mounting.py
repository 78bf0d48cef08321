"""Activated volumes mounted on the gateway's host, by the staging code the CSI node service uses (robin.mounts).

The gateway's host is, to that code, one more node: the agent (`robin gateway`) stages an activated volume at its
mount point (rbd-fuse + a loop device + ext4 made only on a blank image, or ceph-fuse at the CephFS path), and
unstages a deactivated one. So the gateway maps, formats and recovers exactly as the CSI driver does: what is
mounted is read from the kernel each time, never remembered, and a restarted agent finds its predecessor's mounts
(the FUSE daemons run in sessions of their own and outlive it).

Layout under ROBIN_GATEWAY_DIR:
    volumes/<rbd|cephfs>-<volume id>   the mount point: the root of the account's SFTP sessions
    state/<...>                        per volume (robin.mounts.volume.VolumeDir): ceph.conf, 0600 keyring, daemon logs
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from robin import mounts
from robin.ceph import rbd_ops
from robin.errors import Conflict, NotFound, RobinError
from robin.gateway.mountinfo import mount_points
from robin.mounts import Access, Host, MountError
from robin.mounts.errors import NOT_FOUND, OCCUPIED, REFUSED
from robin.volumes import authorization
from robin.volumes import service as volumes
from robin.volumes.models import CephfsPath, RbdImage

__all__ = ["Access", "MountFailed", "Place", "access", "block_device", "is_mounted", "mount", "mount_path",
           "mounted_volumes", "refuse_in_use", "unmount"]

UNMOUNT_RETRY_S = 5.0  # open SFTP handles close within a moment of their session's end


class MountFailed(RobinError):
    status = 500
    code = "gateway_mount_failed"


@dataclass(frozen=True)
class Place:
    """Where and how this host mounts: ROBIN_GATEWAY_DIR and ROBIN_GATEWAY_MOUNTER."""

    gateway_dir: str
    mounter: str

    @property
    def volumes_dir(self) -> str:
        return os.path.join(os.path.realpath(self.gateway_dir), "volumes")


_hosts: dict[Place, Host] = {}
_hosts_lock = threading.Lock()


def _host(place: Place) -> Host:
    """One per process and place: its Daemons reap the FUSE daemons this process started."""
    with _hosts_lock:
        if place not in _hosts:
            _hosts[place] = Host(os.path.join(place.gateway_dir, "state"), place.mounter)
        return _hosts[place]


def _kind(volume: RbdImage | CephfsPath) -> str:
    return "rbd" if isinstance(volume, RbdImage) else "cephfs"


def volume_id(volume: RbdImage | CephfsPath) -> str:
    """The name of the volume's mount point (and staging state) under the gateway's directory."""
    return f"{_kind(volume)}-{volume.id}"


def mount_path(place: Place, volume: RbdImage | CephfsPath) -> str:
    return os.path.join(place.volumes_dir, volume_id(volume))


def is_mounted(path: str) -> bool:
    return mounts.mount_at(path) is not None


def mounted_volumes(place: Place) -> dict[str, str]:
    """volume id -> mount point, for what the kernel has mounted in the place's volumes directory."""
    prefix = place.volumes_dir + os.sep
    return {path[len(prefix):]: path for path in mount_points()
            if path.startswith(prefix) and os.sep not in path[len(prefix):]}


def access(volume: RbdImage | CephfsPath) -> Access:
    """How this host reaches the volume: a CephFS path with its own cephx user (robin.volumes.authorization), whose
    caps reach that path only; an RBD image with robin's user for the cluster."""
    conn = volumes.ceph_connection(volume)
    described = conn.describe()
    if isinstance(volume, CephfsPath):
        user = authorization.volume_user(volume)
        return Access(described["monitors"], described["fsid"], user.user_id, user.key)
    user_id, key = conn.credentials()
    return Access(described["monitors"], described["fsid"], user_id, key)


def refuse_in_use(volume: RbdImage) -> None:
    """An RBD image is mounted only while no node uses it: a second writer would corrupt its file system."""
    users = rbd_ops.users(volumes.ceph_connection(volume), volume.pool, volume.name)
    if users:
        raise Conflict(f"RBD image {volume.name!r} is in use ({'; '.join(users)}); the gateway mounts it only while "
                       "no node has it mapped", code="volume_in_use", details={"users": users})


def mount(place: Place, volume: RbdImage | CephfsPath) -> str:
    """Mount the volume read-write at its mount point (nothing new when it is mounted there already)."""
    path = mount_path(place, volume)
    if isinstance(volume, RbdImage):
        where, fs_type = {"type": "rbd", "pool": volume.pool, "imageName": volume.name}, "ext4"
    else:
        where, fs_type = {"type": "cephfs", "fsName": volume.fs_name, "path": volume.path}, ""
    with _translated(volume.name):
        _host(place).stage(volume_id(volume), path, where, access(volume), fs_type)
    return path


def unmount(place: Place, volume_id: str, name: str) -> None:
    """Unmount the volume `volume_id` (`name` for errors) and stop what served it; retried a few seconds while
    the mount is busy (the gateway is closing its sessions' open files). Idempotent."""
    path = os.path.join(place.volumes_dir, volume_id)
    deadline = time.monotonic() + UNMOUNT_RETRY_S
    while True:
        try:
            with _translated(name):
                _host(place).unstage(volume_id, path)
            break
        except MountFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(mounts.POLL_S * 4)
    if os.path.isdir(path) and not is_mounted(path):
        os.rmdir(path)


@contextmanager
def block_device(place: Place, pool: str, image: str, access: Access):
    """The RBD image as a read-only block device, not mounted (a CSI block volume staged read-only), for as long
    as the block runs; detached after, with its daemon stopped."""
    volume_id = f"rbd-check-{pool}-{image}"
    staging = os.path.join(os.path.realpath(place.gateway_dir), "checks", volume_id)  # named, never made
    where = {"type": "rbd", "pool": pool, "imageName": image}
    with _translated(image), _host(place).block_device(volume_id, staging, where, access) as device:
        yield device


@contextmanager
def _translated(name: str):
    try:
        yield
    except MountError as exc:
        raise _as_robin_error(exc, name) from exc


def _as_robin_error(exc: MountError, name: str) -> RobinError:
    details = {"name": name}
    if exc.kind == NOT_FOUND:
        return NotFound(f"the gateway cannot find {name!r} in Ceph: {exc.message}",
                        code="volume_not_found", details=details)
    if exc.kind in (REFUSED, OCCUPIED):
        return Conflict(f"the gateway cannot mount {name!r}: {exc.message}", code="mount_refused",
                        details=details)
    return MountFailed(f"the gateway could not mount or unmount {name!r}: {exc.message}", details=details)
