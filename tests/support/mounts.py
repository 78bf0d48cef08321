"""FUSE mounts for tests, always undone: unmounted, and the FUSE daemon (ours, by pid) gone."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from contextlib import contextmanager

from tests.support.net import wait_until

MOUNT_TIMEOUT_S = 30
EXIT_TIMEOUT_S = 40  # ceph-fuse waits up to its client shutdown timeout after an unmount


def _mounted(path: str) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == path for line in mounts)


@contextmanager
def ceph_fuse(conf: str, subdir: str):
    """Mount `subdir` of the default CephFS with ceph-fuse (in the foreground, so we own its pid)."""
    mountpoint = tempfile.mkdtemp(prefix="robin-mnt-")
    process = subprocess.Popen(["ceph-fuse", "-f", "-c", conf, "-r", subdir, mountpoint],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _mounted(mountpoint) or process.poll() is not None, MOUNT_TIMEOUT_S, "ceph-fuse")
        if process.poll() is not None:
            raise RuntimeError(f"ceph-fuse exited: {process.stderr.read().decode()[-2000:]}")
        yield mountpoint
    finally:
        _unmount(mountpoint, process)
        os.rmdir(mountpoint)


def _unmount(mountpoint: str, process: subprocess.Popen) -> None:
    if _mounted(mountpoint):
        subprocess.run(["fusermount", "-u", mountpoint], check=False)
    if _mounted(mountpoint):
        subprocess.run(["fusermount", "-u", "-z", mountpoint], check=False)  # busy: detach it
    try:
        process.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
