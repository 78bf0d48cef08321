"""Serves Identity, and Controller and/or Node, on the CSI unix socket until SIGTERM or SIGINT."""
from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from typing import TYPE_CHECKING

import grpc

from csi_shim.config import ShimConfig
from csi_shim.identity import Identity
from csi_shim.stubs import rpc
from robin.client import RobinClient

if TYPE_CHECKING:
    from csi_shim.node import Node

log = logging.getLogger("csi_shim")
STOP_GRACE_S = 10


def build(config: ShimConfig) -> tuple[grpc.Server, RobinClient | None, Node | None]:
    robin = RobinClient(config.robin) if config.robin else None
    node = None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="csi"))
    # A node's readiness never waits on robin's API (a node-only plugin uses it only to fetch CephFS users): a probe
    # failing while robin is away would restart the plugin under its FUSE mounts.
    rpc.add_IdentityServicer_to_server(Identity(config, robin if config.mode != "node" else None), server)
    if config.mode in ("controller", "all"):
        from csi_shim.controller import Controller

        rpc.add_ControllerServicer_to_server(Controller(config, robin), server)
    if config.mode in ("node", "all"):
        from csi_shim.node import Node

        node = Node(config, robin)
        rpc.add_NodeServicer_to_server(node, server)
    path = config.socket_path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)  # left by a plugin that died; kubelet and the sidecars reconnect to the new one
    server.add_insecure_port(config.endpoint)
    return server, robin, node


def serve(config: ShimConfig) -> None:
    server, robin, node = build(config)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    server.start()
    log.info("%s serving %s (%s) on %s as node %s", config.driver_name, config.mode, config.mounter,
             config.endpoint, config.node_id)
    if node is not None:
        # Serving meanwhile: a recovery may take a minute a volume, and calls on other volumes need not wait.
        threading.Thread(target=node.recover, name="fuse-recovery", daemon=True).start()
    stopped.wait()
    server.stop(STOP_GRACE_S).wait()
    if robin is not None:
        robin.close()
    log.info("%s stopped", config.driver_name)
