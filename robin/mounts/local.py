"""Staging for robin's own programs that are one more node to the cluster: the data gateway (activated volumes)
and the GlusterFS migration (its destinations). They map, format (only a blank image), mount and recover exactly as
the CSI node service does, with the same Stager."""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from robin.mounts.staging import Capability, Stager
from robin.mounts.volume import Access

# Nothing on these mounts is ever run (the gateway serves files, the migration copies them); staging adds nodev
# and nosuid to every mount of a volume.
LOCAL_MOUNT_FLAGS = ("noexec",)


class Host:
    """This host's stages under `state_dir`, RBD images mapped by `mounter` (rbd-fuse, krbd, rbd-nbd). One per
    process and directory: its daemons' bookkeeping reaps the FUSE daemons this process started."""

    def __init__(self, state_dir: str, mounter: str):
        self.stager = Stager(state_dir, mounter)

    def stage(self, volume_id: str, path: str, where: Mapping[str, str], access: Access, fs_type: str = "",
              readonly: bool = False) -> None:
        """Mount the volume at `path` (`where`: type and pool + imageName, or fsName + path); nothing new when it
        is mounted there already."""
        capability = Capability(fs_type=fs_type, flags=LOCAL_MOUNT_FLAGS, readonly=readonly)
        self.stager.stage(access.volume(volume_id, where), os.fspath(path), capability)

    def unstage(self, volume_id: str, path: str) -> None:
        """Unmount and stop what served the volume. Idempotent."""
        self.stager.unstage(volume_id, os.fspath(path))

    @contextmanager
    def block_device(self, volume_id: str, staging: str, where: Mapping[str, str], access: Access) -> Iterator[str]:
        """The RBD image as a read-only block device, not mounted, for as long as the block runs."""
        self.stager.stage(access.volume(volume_id, where), os.fspath(staging), Capability(block=True, readonly=True))
        try:
            yield self.stager.device(volume_id)
        finally:
            self.unstage(volume_id, staging)
