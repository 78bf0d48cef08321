"""The Node service's staging, called directly instead of over gRPC, by robin's programs that are one more node
to the cluster: the data gateway (activated volumes) and the GlusterFS migration (its destinations). They map,
format (only a blank image), mount and recover exactly as the CSI driver does, and errors stay CsiErrors with
their gRPC code for the caller to translate."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

from csi_shim.config import ShimConfig
from csi_shim.errors import from_mount
from csi_shim.node import Node, VolumeDir
from csi_shim.stubs import pb
from robin.mounts.errors import MountError

Mode = pb.VolumeCapability.AccessMode
# Nothing on these mounts is ever run (the gateway serves files, the migration copies them); the node adds nodev
# and nosuid to every mount of a volume.
LOCAL_MOUNT_FLAGS = ("noexec",)


@dataclass(frozen=True)
class Access:
    """How the daemons reach the cluster: the monitors, the fsid, a cephx user and its key."""

    monitors: list[str]
    fsid: str
    user: str
    key: str


class LocalNode:
    def __init__(self, state_dir: str, mounter: str, name: str):
        config = ShimConfig(endpoint="", mode="node", node_id=name, driver_name=name, robin=None, mounter=mounter,
                            state_dir=state_dir, default_project="", workers=1)
        self.node = Node(config)

    def stage(self, volume_id: str, path: str, where: dict, access: Access, fs_type: str = "",
              readonly: bool = False) -> None:
        """Mount the volume at `path` (`where`: type and pool + imageName, or fsName + path); nothing new when it
        is mounted there already."""
        mode = Mode.SINGLE_NODE_READER_ONLY if readonly else Mode.SINGLE_NODE_WRITER
        mount = pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=LOCAL_MOUNT_FLAGS)
        capability = pb.VolumeCapability(mount=mount, access_mode=Mode(mode=mode))
        self._call("NodeStageVolume", _stage_request(volume_id, path, capability, where, access))

    def unstage(self, volume_id: str, path: str) -> None:
        """Unmount and stop what served the volume. Idempotent."""
        self._call("NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=path))

    @contextmanager
    def block_device(self, volume_id: str, staging: str, where: dict, access: Access):
        """The RBD image as a read-only block device, not mounted, for as long as the block runs."""
        capability = pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(),
                                         access_mode=Mode(mode=Mode.SINGLE_NODE_READER_ONLY))
        self._call("NodeStageVolume", _stage_request(volume_id, staging, capability, where, access))
        try:
            yield self.node.mounter.devices(VolumeDir(self.node.state_dir, volume_id))[0]
        finally:
            self.unstage(volume_id, staging)

    def _call(self, method: str, request) -> None:
        # The undecorated servicer method: it raises CsiError rather than aborting a gRPC context.
        try:
            getattr(Node, method).__wrapped__(self.node, request, None)
        except MountError as exc:
            raise from_mount(exc) from exc


def _stage_request(volume_id: str, path: str, capability, where: dict, access: Access):
    context = {"monitors": ",".join(access.monitors), "clusterID": access.fsid, **where}
    return pb.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path=os.fspath(path),
                                     volume_capability=capability, volume_context=context,
                                     secrets={"userID": access.user, "userKey": access.key})
