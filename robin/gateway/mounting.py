"""Activated volumes mounted on the gateway's host, by the CSI node service's own code (csi_shim.node).

The gateway's host is, to that code, one more node: an activation is a NodeStageVolume of the volume at its mount
point (rbd-fuse + a loop device + ext4 made only on a blank image, or ceph-fuse at the CephFS path), a deactivation
a NodeUnstageVolume. So the gateway maps, formats and recovers exactly as the CSI driver does: what is mounted is
read from the kernel each time, never remembered, and a restarted API process finds its predecessor's mounts.

Layout under ROBIN_GATEWAY_DIR:
    volumes/<rbd|cephfs>-<volume id>   the mount point: the root of the account's SFTP sessions
    state/<...>                        per volume (csi_shim.node.VolumeDir): ceph.conf, 0600 keyring, daemon logs
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from csi_shim import mounts
from csi_shim.config import ShimConfig
from csi_shim.errors import CsiError
from csi_shim.node import Node, VolumeDir
from csi_shim.stubs import pb
from robin.errors import Conflict, NotFound, RobinError
from robin.volumes.models import CephfsPath, RbdImage

UNMOUNT_RETRY_S = 5.0  # open SFTP handles close within a moment of their session's end
Mode = pb.VolumeCapability.AccessMode


class MountFailed(RobinError):
    status = 500
    code = "gateway_mount_failed"


@dataclass(frozen=True)
class Access:
    """How the gateway's daemons reach the cluster: robin's own cephx user and key, the monitors, the fsid."""

    monitors: list[str]
    fsid: str
    user: str
    key: str


_nodes: dict[tuple[str, str], Node] = {}
_nodes_lock = threading.Lock()


def _node(gateway_dir: str, mounter: str) -> Node:
    """One per process and directory: its Daemons reap the FUSE daemons this process started."""
    key = (gateway_dir, mounter)
    with _nodes_lock:
        if key not in _nodes:
            config = ShimConfig(endpoint="", mode="node", node_id="robin-gateway", driver_name="robin-gateway",
                                robin=None, mounter=mounter, state_dir=os.path.join(gateway_dir, "state"),
                                default_project="", workers=1)
            _nodes[key] = Node(config)
        return _nodes[key]


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
        where, fs_type = {"pool": volume.pool, "imageName": volume.name}, "ext4"
    else:
        where, fs_type = {"fsName": volume.fs_name, "path": volume.path}, ""
    capability = pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(fs_type=fs_type),
                                     access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))
    request = _stage_request(_volume_id(volume), path, capability, {"type": _kind(volume), **where}, access)
    _call(_node(gateway_dir, mounter), "NodeStageVolume", request, volume)
    return path


def _stage_request(volume_id: str, path: str, capability, where: dict, access: Access):
    context = {"monitors": ",".join(access.monitors), "clusterID": access.fsid, **where}
    return pb.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path=path, volume_capability=capability,
                                     volume_context=context, secrets={"userID": access.user, "userKey": access.key})


def unmount(gateway_dir: str, mounter: str, volume: RbdImage | CephfsPath) -> None:
    """Unmount the volume and stop what served it; retried a few seconds while the mount is busy (the gateway
    is closing its sessions' open files). Idempotent."""
    path = mount_path(gateway_dir, volume)
    request = pb.NodeUnstageVolumeRequest(volume_id=_volume_id(volume), staging_target_path=path)
    deadline = time.monotonic() + UNMOUNT_RETRY_S
    while True:
        try:
            _call(_node(gateway_dir, mounter), "NodeUnstageVolume", request, volume)
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
    node = _node(gateway_dir, mounter)
    staging = os.path.join(os.path.realpath(gateway_dir), "checks", volume_id)  # named, never made: not mounted
    capability = pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(),
                                     access_mode=Mode(mode=Mode.SINGLE_NODE_READER_ONLY))
    stage = _stage_request(volume_id, staging, capability, {"type": "rbd", "pool": pool, "imageName": image}, access)
    _call(node, "NodeStageVolume", stage, image)
    try:
        yield node.mounter.devices(VolumeDir(node.state_dir, volume_id))[0]
    finally:
        _call(node, "NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging),
              image)


def _call(node: Node, method: str, request, volume: RbdImage | CephfsPath | str) -> None:
    # The undecorated servicer method: it raises CsiError rather than aborting a gRPC context.
    try:
        getattr(Node, method).__wrapped__(node, request, None)
    except CsiError as exc:
        raise _as_robin_error(exc, volume) from exc


def _as_robin_error(exc: CsiError, volume: RbdImage | CephfsPath | str) -> RobinError:
    name = volume if isinstance(volume, str) else volume.name
    details = {"name": name}
    if exc.code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"the gateway cannot find {name!r} in Ceph: {exc.message}",
                        code="volume_not_found", details=details)
    if exc.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
        return Conflict(f"the gateway cannot mount {name!r}: {exc.message}", code="mount_refused",
                        details=details)
    return MountFailed(f"the gateway could not mount or unmount {name!r}: {exc.message}", details=details)
