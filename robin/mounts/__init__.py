"""Volumes staged on a host: RBD images mapped (rbd-fuse + a loop device, krbd, rbd-nbd) with a file system made
only on a blank image, CephFS paths mounted with ceph-fuse, bound where they are used; the mount table read from
the kernel every time. Plain arguments, and a MountError that names what went wrong without any protocol's codes.
Used by the CSI node service (csi_shim.node), the data gateway and the GlusterFS migration."""
from __future__ import annotations

from robin.mounts.errors import MountError
from robin.mounts.system import (
    POLL_S,
    TENANT_DATA_OPTIONS,
    Daemons,
    Mount,
    log_tail,
    mount_at,
    mounts_under,
    run,
    wait_for,
)

__all__ = ["POLL_S", "TENANT_DATA_OPTIONS", "Daemons", "Mount", "MountError", "log_tail", "mount_at", "mounts_under",
           "run", "wait_for"]
