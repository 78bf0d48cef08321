"""The Identity service (csi-sanity's three Identity cases), and Probe following robin's API."""
from __future__ import annotations

import grpc
import pytest

from csi_shim.stubs import pb
from tests.support.csi import ShimProcess


def test_get_plugin_info_names_the_driver_and_its_version(shim):
    info = shim.identity.GetPluginInfo(pb.GetPluginInfoRequest())
    assert info.name == "csi.robin.io"
    assert info.vendor_version and info.vendor_version != "unknown"


def test_plugin_capabilities_are_the_controller_service_and_online_expansion(shim):
    capabilities = shim.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest()).capabilities
    services = {c.service.type for c in capabilities if c.HasField("service")}
    expansion = {c.volume_expansion.type for c in capabilities if c.HasField("volume_expansion")}
    assert services == {pb.PluginCapability.Service.CONTROLLER_SERVICE}
    assert expansion == {pb.PluginCapability.VolumeExpansion.ONLINE}


def test_probe_is_ready_while_robin_answers(shim):
    assert shim.identity.Probe(pb.ProbeRequest()).ready.value is True


def test_probe_is_not_ready_when_robin_does_not_answer(start_shim, admin_token):
    unreachable = ShimProcess("http://127.0.0.1:9", admin_token, mode="controller")  # nothing listens on port 9
    try:
        assert unreachable.identity.Probe(pb.ProbeRequest()).ready.value is False
    finally:
        unreachable.stop()


def test_a_node_plugin_offers_no_controller_and_needs_no_robin(start_shim, monkeypatch):
    monkeypatch.delenv("ROBIN_URL", raising=False)
    monkeypatch.delenv("ROBIN_TOKEN", raising=False)
    node_only = ShimProcess(None, None, mode="node")  # no robin URL nor token at all
    try:
        capabilities = node_only.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest()).capabilities
        assert not [c for c in capabilities if c.HasField("service")]
        assert node_only.identity.Probe(pb.ProbeRequest()).ready.value is True
        with pytest.raises(grpc.RpcError) as raised:
            node_only.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        node_only.stop()
