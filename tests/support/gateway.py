"""`robin gateway` as a subprocess on 127.0.0.1, stopped (or killed) by its pid, the mounts its agent left in its
directory unmounted after; tmpfs mounts to serve, always unmounted."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from robin.config import Settings
from robin.gateway import mounting
from tests.support.net import free_port, wait_until

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10


@dataclass
class Gateway:
    port: int
    directory: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill ends it: nothing of it runs its cleanup (its FUSE daemons, in
        sessions of their own, live on)."""
        self.process.kill()  # ours, by pid
        self.process.wait()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def running_gateway(database_url: str, directory: str, port: int | None = None, env: dict[str, str] | None = None):
    """Yield a Gateway serving `database_url` with its host key and mounts in `directory` (and more ROBIN_*
    settings in `env`); stop it (and only it) after, and unmount what its agent left mounted there."""
    port = port or free_port()
    log_path = Path(tempfile.mkstemp(prefix="robin-gateway-", suffix=".log")[1])
    env = {**os.environ, "ROBIN_DATABASE_URL": database_url, "ROBIN_GATEWAY_DIR": directory,
           "ROBIN_GATEWAY_HOST": "127.0.0.1", "ROBIN_GATEWAY_PORT": str(port), "ROBIN_LOG_LEVEL": "INFO",
           **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "robin.cli", "gateway"], env=env, stdout=log, stderr=log,
                                   start_new_session=True)
    try:
        wait_until(lambda: _listening(port) or process.poll() is not None, START_TIMEOUT_S, "robin gateway")
        if process.poll() is not None:
            raise RuntimeError(f"robin gateway exited: {log_path.read_text()[-2000:]}")
        yield Gateway(port, directory, log_path, process)
    finally:
        _stop(process)
        unmount_left(directory)
        print(f"robin gateway log: {log_path}")


def unmount_left(directory: str) -> None:
    """What an agent mounted in `directory` and nothing deactivated (a test that failed half-way, a second
    agent still to come): unmounted with the agent's own code, daemons and devices included."""
    place = mounting.Place(directory, Settings.gateway_mounter)
    for volume_id in mounting.mounted_volumes(place):
        mounting.unmount(place, volume_id, volume_id)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()  # ours, by pid
            process.wait()


def _mounted(path: str) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == path for line in mounts)


@contextmanager
def tmpfs():
    """A small tmpfs mounted on a fresh directory in /tmp: a real mount point for a gateway account."""
    mountpoint = tempfile.mkdtemp(prefix="robin-gw-mnt-", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", mountpoint], check=True)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", mountpoint], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", mountpoint], check=False)  # still busy: detach it
        if not _mounted(mountpoint):
            os.rmdir(mountpoint)
