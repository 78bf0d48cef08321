"""The shim's settings, from command-line flags and ROBIN_* / ROBIN_CSI_* environment variables."""
from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass

from robin.client import ClientConfig

DRIVER_NAME = "csi.robin.io"  # robin's provisioner points its PVs at this name too
MODES = ("controller", "node", "all")
MOUNTERS = ("rbd-fuse", "krbd", "rbd-nbd")


@dataclass(frozen=True)
class ShimConfig:
    endpoint: str  # unix:///path/csi.sock
    mode: str
    node_id: str
    driver_name: str
    robin: ClientConfig | None  # None on a node-only plugin: the node never calls robin's API
    mounter: str
    state_dir: str  # node: per-volume Ceph credentials and rbd-fuse mounts (kubelet's paths hold the rest)
    default_project: str  # volumes whose request names no project nor namespace
    workers: int

    @property
    def socket_path(self) -> str:
        return self.endpoint[len("unix://"):]


def parse(argv=None) -> ShimConfig:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m csi_shim", description=__doc__)
    parser.add_argument("--endpoint", default=env("CSI_ENDPOINT", "unix:///csi/csi.sock"),
                        help="unix:///path of the socket to serve [CSI_ENDPOINT]")
    parser.add_argument("--mode", choices=MODES, default=env("ROBIN_CSI_MODE", "all"),
                        help="which services to serve besides Identity [ROBIN_CSI_MODE, all]")
    parser.add_argument("--node-id", default=env("ROBIN_CSI_NODE_ID") or env("NODE_NAME") or socket.gethostname(),
                        help="this node's name [ROBIN_CSI_NODE_ID, $NODE_NAME, hostname]")
    parser.add_argument("--driver-name", default=env("ROBIN_CSI_DRIVER_NAME", DRIVER_NAME))
    parser.add_argument("--robin-url", default=env("ROBIN_URL"), help="robin's API [ROBIN_URL]")
    parser.add_argument("--robin-token-file", default=env("ROBIN_TOKEN_FILE"),
                        help="a file holding an admin token [ROBIN_TOKEN_FILE; or ROBIN_TOKEN]")
    parser.add_argument("--mounter", choices=MOUNTERS, default=env("ROBIN_CSI_MOUNTER", "krbd"),
                        help="how a node maps RBD images [ROBIN_CSI_MOUNTER, krbd]")
    parser.add_argument("--state-dir", default=env("ROBIN_CSI_STATE_DIR", "/var/lib/robin-csi"))
    parser.add_argument("--default-project", default=env("ROBIN_CSI_DEFAULT_PROJECT", "kubernetes"))
    parser.add_argument("--workers", type=int, default=int(env("ROBIN_CSI_WORKERS", "16")),
                        help="gRPC calls served at once")
    args = parser.parse_args(argv)
    robin = None
    if args.mode != "node":
        if args.robin_token_file:
            os.environ["ROBIN_TOKEN_FILE"] = args.robin_token_file
        try:
            robin = ClientConfig.from_env(url=args.robin_url)
        except (ValueError, OSError) as exc:
            parser.error(str(exc))
    if not args.endpoint.startswith("unix://"):
        parser.error(f"--endpoint must be unix:///path (a unix socket), not {args.endpoint!r}")
    return ShimConfig(endpoint=args.endpoint, mode=args.mode, node_id=args.node_id, driver_name=args.driver_name,
                      robin=robin, mounter=args.mounter, state_dir=args.state_dir,
                      default_project=args.default_project, workers=args.workers)
