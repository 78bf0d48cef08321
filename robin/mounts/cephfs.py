"""How a CephFS volume is mounted on this host: by the kernel's CephFS client (`mount -t ceph`) where the kernel has
one, by ceph-fuse otherwise or when the volume asks for it (its `mounter`).

The kernel client keeps no process of its own: a staged volume outlives any restart of the program that mounted it.
A ceph-fuse mount lives as long as its daemon does.
"""
from __future__ import annotations

import logging
import os
import re

from robin.mounts.errors import REFUSED, MountError
from robin.mounts.volume import CEPHFS_MOUNTERS, CLIENT_MOUNT_TIMEOUT_S, MONITOR, MSGR2_PORT, Volume, VolumeDir

log = logging.getLogger(__name__)

KERNEL, FUSE = CEPHFS_MOUNTERS
# The release that names the file system `fs=`; older ones know only `mds_namespace=` (still read by newer ones).
FS_OPTION_RELEASE = (5, 17)
# ms_mode when the monitors speak msgr2 only (port 3300) and the volume names none: CRC, like ceph-fuse's default.
MSGR2_MODE = "prefer-crc"


def kernel_has_ceph(filesystems: str = "/proc/filesystems", modules: str = "/lib/modules") -> bool:
    """The kernel knows the ceph file system: built in or loaded (/proc/filesystems), or as a module mount(8)
    loads on first use."""
    try:
        with open(filesystems) as listed:
            if any(line.split()[-1:] == ["ceph"] for line in listed):
                return True
    except OSError:
        pass
    module_dir = os.path.join(modules, os.uname().release, "kernel", "fs", "ceph")
    return os.path.isdir(module_dir) and any(name.startswith("ceph.ko") for name in os.listdir(module_dir))


def choose(volume: Volume, kernel_available: bool) -> str:
    """kernel or fuse, for `volume` on this host, logged with why."""
    if volume.mounter == FUSE:
        log.info("%s: ceph-fuse, as its volume context asks", volume.id)
        return FUSE
    if kernel_available:
        log.info("%s: the kernel's CephFS client%s", volume.id,
                 ", as its volume context asks" if volume.mounter == KERNEL else "")
        return KERNEL
    if volume.mounter == KERNEL:
        raise MountError(REFUSED, f"{volume.id} asks for the kernel's CephFS client (mounter kernel), and this "
                                  f"node's kernel has no ceph file system: load the ceph module, or use mounter fuse")
    log.info("%s: ceph-fuse, as this node's kernel has no ceph file system", volume.id)
    return FUSE


def _release(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _address(monitor: str) -> tuple[str, bool]:
    """The monitor as the kernel's device string spells it (no v1:/v2: prefix), and whether it is msgr2's."""
    match = MONITOR.fullmatch(monitor)
    protocol, host, port = match.group(1), match.group(2), match.group(4)
    msgr2 = protocol == "v2:" or (not protocol and port == MSGR2_PORT)
    return (f"{host}:{port}" if port else host), msgr2


def kernel_source(volume: Volume) -> str:
    """`mon1:port,mon2:port:/path`, the device string every kernel with CephFS reads."""
    return ",".join(_address(m)[0] for m in volume.monitors) + ":" + volume.path


def kernel_options(volume: Volume, vdir: VolumeDir, release: str) -> list[str]:
    """mount(8)'s options for the kernel client, before the capability's flags and the tenant-data options: the
    user and its key in a file (never on a command line), the file system, the cluster, the messenger mode."""
    options = [f"name={volume.user}", f"secretfile={vdir.secret}",
               ("fs=" if _release(release) >= FS_OPTION_RELEASE else "mds_namespace=") + volume.fs_name,
               f"mount_timeout={CLIENT_MOUNT_TIMEOUT_S}"]
    if volume.fsid:
        options.append(f"fsid={volume.fsid}")  # monitors of another cluster are refused
    given = {option.split("=", 1)[0] for option in volume.kernel_options}
    if "ms_mode" not in given and any(_address(m)[1] for m in volume.monitors):
        options.append(f"ms_mode={MSGR2_MODE}")  # the legacy messenger cannot talk to port 3300
    return options + list(volume.kernel_options)


def fuse_options(volume: Volume, vdir: VolumeDir) -> list[str]:
    """ceph-fuse's -o options before the capability's flags and the tenant-data options."""
    return [f"fsname={vdir.tag}", *volume.fuse_options]
