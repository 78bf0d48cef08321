"""Activated volumes mounted on the gateway's host, by the staging code the CSI node service uses (robin.mounts).

The gateway's host is, to that code, one more node: an activation stages the volume at its mount point (rbd-fuse +
a loop device + ext4 made only on a blank image, or ceph-fuse at the CephFS path), a deactivation unstages it. So
the gateway maps, formats and recovers exactly as the CSI driver does: what is mounted is read from the kernel each
time, never remembered, and a restarted API process finds its predecessor's mounts.

Layout under ROBIN_GATEWAY_DIR:
    volumes/<rbd|cephfs>-<volume id>   the mount point: the root of the account's SFTP sessions
    state/<...>                        per volume (robin.mounts.volume.VolumeDir): ceph.conf, 0600 keyring, daemon logs
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

from robin import mounts
from robin.errors import Conflict, NotFound, RobinError
from robin.mounts import Access, Host, MountError
from robin.mounts.errors import NOT_FOUND, OCCUPIED, REFUSED
from robin.volumes.models import CephfsPath, RbdImage

__all__ = ["Access", "MountFailed", "block_device", "is_mounted", "mount", "mount_path", "unmount"]

UNMOUNT_RETRY_S = 5.0  # open SFTP handles close within a moment of their session's end


class MountFailed(RobinError):
    status = 500
    code = "gateway_mount_failed"


_hosts: dict[tuple[str, str], Host] = {}
_hosts_lock = threading.Lock()


def _host(gateway_dir: str, mounter: str) -> Host:
    """One per process and directory: its Daemons reap the FUSE daemons this process started."""
    key = (gateway_dir, mounter)
    with _hosts_lock:
        if key not in _hosts:
            _hosts[key] = Host(os.path.join(gateway_dir, "state"), mounter)
        return _hosts[key]


def _kind(volume: RbdImage | CephfsPath) -> str:
    return "rbd" if isinstance(volume, RbdImage) else "cephfs"


def mount_path(gateway_dir: str, volume: RbdImage | CephfsPath) -> str:
    return os.path.join(os.path.realpath(gateway_dir), "volumes", f"{_kind(volume)}-{volume.id}")


def _volume_id(volume: RbdImage | CephfsPath) -> str:
    return f"{_kind(volume)}-{volume.id}"


def is_mounted(path: str) -> bool:
    return mounts.mount_at(path) is not None


def mount(gateway_dir: str, mounter: str, volume: RbdImage | CephfsPath, access: Access) -> str:
    """Mount the volume read-write at its mount point (nothing new when it is mounted there already)."""
    path = mount_path(gateway_dir, volume)
    if isinstance(volume, RbdImage):
        where, fs_type = {"type": "rbd", "pool": volume.pool, "imageName": volume.name}, "ext4"
    else:
        where, fs_type = {"type": "cephfs", "fsName": volume.fs_name, "path": volume.path}, ""
    with _translated(volume):
        _host(gateway_dir, mounter).stage(_volume_id(volume), path, where, access, fs_type)
    return path


def unmount(gateway_dir: str, mounter: str, volume: RbdImage | CephfsPath) -> None:
    """Unmount the volume and stop what served it; retried a few seconds while the mount is busy (the gateway
    is closing its sessions' open files). Idempotent."""
    path = mount_path(gateway_dir, volume)
    deadline = time.monotonic() + UNMOUNT_RETRY_S
    while True:
        try:
            with _translated(volume):
                _host(gateway_dir, mounter).unstage(_volume_id(volume), path)
            break
        except MountFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(mounts.POLL_S * 4)
    if os.path.isdir(path) and not is_mounted(path):
        os.rmdir(path)


@contextmanager
def block_device(gateway_dir: str, mounter: str, pool: str, image: str, access: Access):
    """The RBD image as a read-only block device, not mounted (a CSI block volume staged read-only), for as long
    as the block runs; detached after, with its daemon stopped."""
    volume_id = f"rbd-check-{pool}-{image}"
    staging = os.path.join(os.path.realpath(gateway_dir), "checks", volume_id)  # named, never made: not mounted
    where = {"type": "rbd", "pool": pool, "imageName": image}
    with _translated(image), _host(gateway_dir, mounter).block_device(volume_id, staging, where, access) as device:
        yield device


@contextmanager
def _translated(volume: RbdImage | CephfsPath | str):
    try:
        yield
    except MountError as exc:
        raise _as_robin_error(exc, volume) from exc


def _as_robin_error(exc: MountError, volume: RbdImage | CephfsPath | str) -> RobinError:
    name = volume if isinstance(volume, str) else volume.name
    details = {"name": name}
    if exc.kind == NOT_FOUND:
        return NotFound(f"the gateway cannot find {name!r} in Ceph: {exc.message}",
                        code="volume_not_found", details=details)
    if exc.kind in (REFUSED, OCCUPIED):
        return Conflict(f"the gateway cannot mount {name!r}: {exc.message}", code="mount_refused",
                        details=details)
    return MountFailed(f"the gateway could not mount or unmount {name!r}: {exc.message}", details=details)
