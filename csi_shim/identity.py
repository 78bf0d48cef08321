"""The Identity service: who the plugin is, what it offers, and whether it is ready."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from google.protobuf.wrappers_pb2 import BoolValue

from csi_shim.config import ShimConfig
from csi_shim.errors import csi_service
from csi_shim.stubs import pb, rpc
from robin.client import RobinApiError, RobinClient


def _robin_version() -> str:
    try:
        return version("robin")
    except PackageNotFoundError:
        return "unknown"


@csi_service
class Identity(rpc.IdentityServicer):
    def __init__(self, config: ShimConfig, robin: RobinClient | None):
        self.config, self.robin = config, robin

    def GetPluginInfo(self, request, context):
        return pb.GetPluginInfoResponse(name=self.config.driver_name, vendor_version=_robin_version(),
                                        manifest={"mode": self.config.mode})

    def GetPluginCapabilities(self, request, context):
        capabilities = [pb.PluginCapability(volume_expansion=pb.PluginCapability.VolumeExpansion(
            type=pb.PluginCapability.VolumeExpansion.ONLINE))]
        if self.config.mode != "node":
            capabilities.insert(0, pb.PluginCapability(service=pb.PluginCapability.Service(
                type=pb.PluginCapability.Service.CONTROLLER_SERVICE)))
        return pb.GetPluginCapabilitiesResponse(capabilities=capabilities)

    def Probe(self, request, context):
        """Ready when robin's API answers (a node-only plugin does not use it)."""
        if self.robin is None:
            return pb.ProbeResponse(ready=BoolValue(value=True))
        try:
            self.robin.request("GET", "/healthz")
        except RobinApiError:
            return pb.ProbeResponse(ready=BoolValue(value=False))
        return pb.ProbeResponse(ready=BoolValue(value=True))
