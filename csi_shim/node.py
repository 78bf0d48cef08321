"""The Node service: the CSI requests of a node, answered by robin.mounts' Stager (stage once per node, publish
with bind mounts at each workload's path). This module only checks the requests, turns them into plain arguments
and the Stager's answers into responses; a MountError becomes its gRPC status in csi_shim.errors. A stage whose
FUSE daemon died is mounted again with the monitors and user a stage would get now (`_current`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from csi_shim.clusters import ClusterMap, with_monitors
from csi_shim.config import ShimConfig
from csi_shim.errors import CsiError, csi_service, failed_precondition, invalid
from csi_shim.ids import parse_volume_id
from csi_shim.stubs import pb, rpc
from robin.client import RobinApiError, RobinClient
from robin.mounts import Capability, MountError, Stager, Usage, Volume
from robin.mounts.errors import FAILED

Mode = pb.VolumeCapability.AccessMode
READER_ONLY = (Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY)


def _required(value: str, name: str) -> str:
    if not value:
        raise invalid(f"{name} is required")
    return value


def _capability(request) -> Capability:
    if not request.HasField("volume_capability"):
        raise invalid("volume_capability is required")
    capability = request.volume_capability
    if capability.WhichOneof("access_type") is None:
        raise invalid("volume_capability needs an access type: mount or block")
    mode = capability.access_mode.mode
    return Capability(block=capability.HasField("block"), fs_type=capability.mount.fs_type,
                      flags=tuple(capability.mount.mount_flags), readonly=mode in READER_ONLY,
                      multi_writer=mode == Mode.MULTI_NODE_MULTI_WRITER)


def _volume_usage(usage: Usage) -> pb.VolumeUsage:
    unit = pb.VolumeUsage.INODES if usage.inodes else pb.VolumeUsage.BYTES
    return pb.VolumeUsage(total=usage.total, available=usage.available, used=usage.used, unit=unit)


@csi_service
class Node(rpc.NodeServicer):
    def __init__(self, config: ShimConfig, robin: RobinClient | None = None):
        self.config = config
        self.stager = Stager(config.state_dir, config.mounter, refresh=self._current)
        self.robin = robin if config.cephfs_users else None
        self.clusters = ClusterMap(config.cluster_map) if config.cluster_map else None

    def recover(self) -> None:
        """Mount again the stages whose FUSE daemons died with this plugin's predecessor (its container)."""
        self.stager.recover_all()

    def _current(self, volume: Volume) -> Volume:
        """A recorded volume as NodeStageVolume would have it now: its cluster's monitors from the cluster map,
        and for one of robin's CephFS paths on a node with --cephfs-users, the path's user fetched again."""
        try:
            context = {"clusterID": volume.fsid, "monitors": ",".join(volume.monitors)}
            volume = replace(volume, monitors=with_monitors(context, self.clusters)["monitors"].split(","))
            ref = parse_volume_id(volume.id)
            if self.robin is not None and ref is not None and ref.kind == "cephfs":
                own = self.robin.authorize_cephfs_path(ref.project, ref.name)
                volume = replace(volume, fs_name=own["fs"], path=own["path"], user=own["user_id"], key=own["key"])
        except CsiError as exc:
            raise MountError(FAILED, f"{volume.id} cannot be mounted again: {exc.message}") from exc
        except RobinApiError as exc:
            raise MountError(FAILED, f"{volume.id} cannot be mounted again: robin: {exc.explanation}") from exc
        return volume

    def NodeGetCapabilities(self, request, context):
        kinds = (pb.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME, pb.NodeServiceCapability.RPC.GET_VOLUME_STATS,
                 pb.NodeServiceCapability.RPC.EXPAND_VOLUME, pb.NodeServiceCapability.RPC.VOLUME_CONDITION)
        return pb.NodeGetCapabilitiesResponse(capabilities=[
            pb.NodeServiceCapability(rpc=pb.NodeServiceCapability.RPC(type=kind)) for kind in kinds])

    def NodeGetInfo(self, request, context):
        return pb.NodeGetInfoResponse(node_id=self.config.node_id, max_volumes_per_node=0)

    def NodeStageVolume(self, request, context):
        _required(request.volume_id, "volume_id")
        staging = _required(request.staging_target_path, "staging_target_path")
        capability = _capability(request)
        context, secrets = self._context_and_secrets(request)
        volume = Volume.from_context(request.volume_id, with_monitors(context, self.clusters), secrets)
        self.stager.stage(volume, staging, capability)
        return pb.NodeStageVolumeResponse()

    def _context_and_secrets(self, request) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """What to stage with: the request's volume context and node-stage secret; for one of robin's CephFS paths,
        when this node mounts paths with their own users, that user and robin's record of where the path is."""
        ref = parse_volume_id(request.volume_id)
        if self.robin is None or ref is None or ref.kind != "cephfs":
            return request.volume_context, request.secrets
        own = self.robin.authorize_cephfs_path(ref.project, ref.name)
        context = {**request.volume_context, "fsName": own["fs"], "path": own["path"]}
        return context, {"userID": own["user_id"], "userKey": own["key"]}

    def NodeUnstageVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        staging = _required(request.staging_target_path, "staging_target_path")
        self.stager.unstage(volume_id, staging)
        return pb.NodeUnstageVolumeResponse()

    def NodePublishVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        target = _required(request.target_path, "target_path")
        capability = _capability(request)
        if not request.staging_target_path:
            raise failed_precondition("staging_target_path is required: this plugin stages volumes")
        self.stager.publish(volume_id, request.staging_target_path, target, capability.block, request.readonly)
        return pb.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        target = _required(request.target_path, "target_path")
        self.stager.unpublish(volume_id, target)
        return pb.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        path = _required(request.volume_path, "volume_path")
        problem = self.stager.condition(volume_id, path)  # a dead FUSE stage is mounted again first
        if problem is not None:
            return pb.NodeGetVolumeStatsResponse(volume_condition=pb.VolumeCondition(abnormal=True, message=problem))
        usage = self.stager.usage(volume_id, path)
        return pb.NodeGetVolumeStatsResponse(usage=[_volume_usage(figure) for figure in usage],
                                             volume_condition=pb.VolumeCondition(abnormal=False, message="healthy"))

    def NodeExpandVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        path = _required(request.volume_path, "volume_path")
        capacity = self.stager.expand(volume_id, path, request.staging_target_path,
                                      request.capacity_range.required_bytes)
        return pb.NodeExpandVolumeResponse(capacity_bytes=capacity)
