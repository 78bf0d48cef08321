"""`python -m csi_shim` as a subprocess on a unix socket in /tmp, with a gRPC channel to it; stopped by pid."""
from __future__ import annotations

import configparser
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

from csi_shim.stubs import pb, rpc
from tests.support.net import wait_until

STOP_TIMEOUT_S = 20


def cephx_key(ceph_conf: str, client: str = "client.admin") -> str:
    """The key of `client` from the keyring the cluster's ceph.conf names (the dev cluster's layout)."""
    conf = configparser.ConfigParser(strict=False)
    conf.read(ceph_conf)
    keyring_path = conf.get("global", "keyring", fallback=str(Path(ceph_conf).parent / "keyring"))
    keyring = configparser.ConfigParser(strict=False)
    keyring.read(keyring_path.replace("$cluster", "ceph"))
    return keyring.get(client, "key")


class ShimProcess:
    """The plugin, and `identity`, `controller`, `node` stubs on one channel to its socket."""

    def __init__(self, robin_url: str | None, token: str | None, mode: str = "all", node_id: str = "test-node",
                 directory: str | None = None, extra_env: dict | None = None):
        # Short paths: a unix socket path is limited to 107 bytes.
        self.directory = Path(directory or tempfile.mkdtemp(prefix="csi", dir="/tmp"))
        self.socket = self.directory / "csi.sock"
        self.state_dir = self.directory / "state"
        self.log_path = self.directory / "shim.log"
        self._argv = [sys.executable, "-m", "csi_shim", "--endpoint", f"unix://{self.socket}", "--mode", mode,
                      "--node-id", node_id, "--mounter", "rbd-fuse", "--state-dir", str(self.state_dir)]
        self._env = {**os.environ, "ROBIN_LOG_LEVEL": "INFO", **(extra_env or {})}
        if robin_url:
            self._env.update(ROBIN_URL=robin_url, ROBIN_TOKEN=token)
        self.process: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.start()

    def start(self) -> ShimProcess:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self._argv, env=self._env, stdout=self._log, stderr=self._log,
                                        start_new_session=True)
        wait_until(lambda: self.socket.exists() or self.process.poll() is not None, 60, "the CSI socket")
        if self.process.poll() is not None:
            raise RuntimeError(f"csi_shim exited: {self.log()[-2000:]}")
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.identity = rpc.IdentityStub(self.channel)
        self.controller = rpc.ControllerStub(self.channel)
        self.node = rpc.NodeStub(self.channel)
        return self

    def restart(self) -> ShimProcess:
        """Stops the plugin (SIGKILL: what it knew in memory is gone) and starts a new one on the same socket."""
        self.channel.close()
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()
        return self.start()

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def mount_capability(fs_type: str = "ext4", mode=None, flags=()) -> pb.VolumeCapability:
    return pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
                               access_mode=pb.VolumeCapability.AccessMode(
                                   mode=mode or pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))


def block_capability(mode=None) -> pb.VolumeCapability:
    return pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(), access_mode=pb.VolumeCapability.AccessMode(
        mode=mode or pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
