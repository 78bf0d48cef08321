"""Volumes staged on a host: RBD images mapped (rbd-fuse + a loop device, krbd, rbd-nbd) with a file system made
only on a blank image, CephFS paths mounted by the kernel's client or ceph-fuse, bound where they are used; the
mount table read from the kernel every time. Plain arguments, and a MountError that names what went wrong without
any protocol's codes. Used by the CSI node service (csi_shim.node), the data gateway and the GlusterFS migration.

    errors    MountError and its kinds
    inflight  InFlight: one operation at a time per volume or request name (IN_PROGRESS for the second)
    system    the mount table, block and loop devices, file systems, FUSE daemons, commands with deadlines
    volume    a volume's location, how it is used (Capability), cluster access and directory of credentials
    mappers   RBD images as block devices: rbd-fuse + loop, krbd, rbd-nbd
    cephfs    which CephFS client mounts a volume (kernel or ceph-fuse), and its options
    recovery  stages whose FUSE daemon died: how they are recognised, the record they are mounted again from
    staging   Stager: stage, unstage, publish, unpublish, usage, expand; recovery of dead FUSE stages
    local     Host: staging for the gateway and the migration (noexec, no CSI request)
"""
from __future__ import annotations

from robin.mounts.errors import MountError
from robin.mounts.inflight import InFlight
from robin.mounts.local import LOCAL_MOUNT_FLAGS, Host
from robin.mounts.staging import Capability, Stager, Usage
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
from robin.mounts.volume import Access, Volume

__all__ = ["LOCAL_MOUNT_FLAGS", "POLL_S", "TENANT_DATA_OPTIONS", "Access", "Capability", "Daemons", "Host", "InFlight",
           "Mount", "MountError", "Stager", "Usage", "Volume", "log_tail", "mount_at", "mounts_under", "run",
           "wait_for"]
