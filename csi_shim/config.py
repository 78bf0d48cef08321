"""The shim's settings: command-line flags over robin.config's `CsiSettings` (ROBIN_CSI_* variables and the
config file) and, for the controller, its `ClientSettings` (ROBIN_URL, ROBIN_TOKEN or ROBIN_TOKEN_FILE)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from robin.client import ClientConfig
from robin.config import CSI_MODES, RBD_MOUNTERS, ConfigError, CsiSettings


@dataclass(frozen=True)
class ShimConfig:
    endpoint: str  # unix:///path/csi.sock
    mode: str
    node_id: str
    driver_name: str
    robin: ClientConfig | None  # None on a node-only plugin, unless it fetches CephFS paths' users (cephfs_users)
    mounter: str
    state_dir: str  # node: per-volume Ceph credentials and rbd-fuse mounts (kubelet's paths hold the rest)
    cluster_map: str  # node: ceph-csi's config.json, the clusters' monitors by fsid ("" for none)
    default_project: str  # volumes whose request names no project nor namespace
    workers: int
    log_level: str = "INFO"
    cephfs_users: bool = False  # node: mount robin's CephFS paths with their own users, fetched from robin's API

    @property
    def socket_path(self) -> str:
        return self.endpoint[len("unix://"):]


def parse(argv=None) -> ShimConfig:
    parser = argparse.ArgumentParser(prog="python -m csi_shim", description=__doc__)
    try:
        defaults = CsiSettings.from_env()
    except ConfigError as exc:
        parser.error(str(exc))
    parser.add_argument("--endpoint", default=defaults.endpoint,
                        help="unix:///path of the socket to serve [CSI_ENDPOINT]")
    parser.add_argument("--mode", choices=CSI_MODES, default=defaults.mode,
                        help="which services to serve besides Identity [ROBIN_CSI_MODE, all]")
    parser.add_argument("--node-id", default=defaults.node_id,
                        help="this node's name [ROBIN_CSI_NODE_ID, $NODE_NAME, hostname]")
    parser.add_argument("--driver-name", default=defaults.driver_name)
    parser.add_argument("--robin-url", help="robin's API [ROBIN_URL]")
    parser.add_argument("--robin-token-file", help="a file holding an admin token [ROBIN_TOKEN_FILE; or ROBIN_TOKEN]")
    parser.add_argument("--mounter", choices=RBD_MOUNTERS, default=defaults.mounter,
                        help="how a node maps RBD images [ROBIN_CSI_MOUNTER, krbd]")
    parser.add_argument("--state-dir", default=defaults.state_dir)
    parser.add_argument("--cluster-map", default=defaults.cluster_map,
                        help="node: a JSON file of the clusters' monitors, ceph-csi's config.json format, read at "
                             "every stage [ROBIN_CSI_CLUSTER_MAP]")
    parser.add_argument("--default-project", default=defaults.default_project)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="gRPC calls served at once")
    parser.add_argument("--cephfs-users", action=argparse.BooleanOptionalAction, default=defaults.cephfs_users,
                        help="a node mounts robin's CephFS paths with each path's own cephx user, fetched from robin's "
                             "API with a node token [ROBIN_CSI_CEPHFS_USERS, false]")
    args = parser.parse_args(argv)
    robin = None
    if args.mode != "node" or args.cephfs_users:
        try:
            robin = ClientConfig.from_env(url=args.robin_url, token_file=args.robin_token_file)
        except ConfigError as exc:
            parser.error(str(exc))
    if not args.endpoint.startswith("unix://"):
        parser.error(f"--endpoint must be unix:///path (a unix socket), not {args.endpoint!r}")
    return ShimConfig(endpoint=args.endpoint, mode=args.mode, node_id=args.node_id, driver_name=args.driver_name,
                      robin=robin, mounter=args.mounter, state_dir=args.state_dir,
                      cluster_map=args.cluster_map, default_project=args.default_project, workers=args.workers,
                      log_level=defaults.log_level, cephfs_users=args.cephfs_users and args.mode != "controller")
