"""Mounts for tests, always undone: unmounted, detached, and the FUSE daemon (ours, by pid) gone.

- `ceph_fuse(conf, subdir)`: a CephFS directory through ceph-fuse.
- `rbd_filesystem(conf, pool, image, mkfs=...)`: an ext4 file system on an RBD image, with no
  kernel rbd or nbd module: rbd-fuse exposes the image as a file, a loop device makes that file a
  block device, and the kernel mounts it. Call it again with `mkfs=False` to mount what is there.

Nothing here stops a process by name: only the FUSE daemons these helpers started, by their pid.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from contextlib import contextmanager

from tests.support.net import wait_until

MOUNT_TIMEOUT_S = 30
EXIT_TIMEOUT_S = 40  # ceph-fuse waits up to its client shutdown timeout after an unmount
DETACH_TIMEOUT_S = 10  # a loop device lets go of its backing file once nothing holds it open


def _mounted(path: str) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == path for line in mounts)


@contextmanager
def ceph_fuse(conf: str, subdir: str):
    """Mount `subdir` of the default CephFS with ceph-fuse (in the foreground, so we own its pid)."""
    mountpoint = tempfile.mkdtemp(prefix="robin-mnt-")
    # With POSIX ACLs, as robin mounts CephFS: without them ceph-fuse hides system.posix_acl_*.
    process = subprocess.Popen(["ceph-fuse", "-f", "-c", conf, "--client_acl_type=posix_acl", "-r", subdir, mountpoint],
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
    _wait_for_exit(process)


def _wait_for_exit(process: subprocess.Popen) -> bool:
    """Wait for our own FUSE daemon to exit; SIGKILL it (by pid) after a deadline. True if it had to be killed."""
    try:
        process.wait(EXIT_TIMEOUT_S)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


# --- RBD: rbd-fuse + loop + ext4 ----------------------------------------------------------------

def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def _loop_attached(device: str) -> bool:
    """Whether the loop device still has a backing file (detaching is deferred while it is open)."""
    return os.path.exists(f"/sys/block/{os.path.basename(device)}/loop/backing_file")


def _has_file_system(device: str) -> bool:
    # blkid -p probes the device itself (no cache); exit status 2 means no signature was found.
    probe = subprocess.run(["blkid", "-p", device], capture_output=True, text=True, check=False)
    if probe.returncode not in (0, 2):
        raise RuntimeError(f"blkid -p {device} failed ({probe.returncode}): {probe.stderr.strip()}")
    return probe.returncode == 0


class _RbdMount:
    """What rbd_filesystem has set up so far, so that teardown undoes exactly that, in reverse."""

    def __init__(self, conf: str, pool: str, image: str):
        self.fuse_dir = tempfile.mkdtemp(prefix="robin-rbdfuse-")
        self.image_file = os.path.join(self.fuse_dir, image)
        self.log = tempfile.TemporaryFile()  # rbd-fuse talks on stderr at every lookup: never a pipe that fills
        self.process: subprocess.Popen | None = None
        self.loop: str | None = None
        self.mountpoint: str | None = None
        self.command = ["rbd-fuse", "-f", "-c", conf, "-p", pool, "-r", image, self.fuse_dir]

    def daemon_log(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def start(self, mkfs: bool) -> str:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        # The file appears once the FUSE mount is up and rbd-fuse has reached the cluster (a lookup
        # opens the image). A daemon that dies ends the wait at once.
        wait_until(lambda: self.process.poll() is not None
                   or (_mounted(self.fuse_dir) and os.path.exists(self.image_file)),
                   MOUNT_TIMEOUT_S, f"rbd-fuse to show {self.image_file}")
        if self.process.poll() is not None:
            raise RuntimeError(f"rbd-fuse exited with {self.process.returncode}: {self.daemon_log()}")
        self.loop = _run("losetup", "--find", "--show", self.image_file)
        if mkfs:
            if _has_file_system(self.loop):
                raise RuntimeError(f"refusing to mkfs {self.image_file}: it already holds a file system")
            _run("mkfs.ext4", "-q", "-F", self.loop)
        self.mountpoint = tempfile.mkdtemp(prefix="robin-rbdmnt-")
        _run("mount", "-t", "ext4", self.loop, self.mountpoint)
        return self.mountpoint

    def stop(self) -> list[str]:
        """Undo everything, in order, each step attempted even when an earlier one failed.
        Returns what could not be undone cleanly (empty when all went well)."""
        problems: list[str] = []
        subprocess.run(["sync"], check=False)
        if self.mountpoint and _mounted(self.mountpoint):
            if subprocess.run(["umount", self.mountpoint], capture_output=True, check=False).returncode != 0:
                problems.append(f"{self.mountpoint} was busy: lazily unmounted")
                subprocess.run(["umount", "-l", self.mountpoint], check=False)
        if self.loop:
            # After a lazy unmount the kernel defers the detach (autoclear) until the last user is gone.
            subprocess.run(["losetup", "-d", self.loop], capture_output=True, check=False)
            try:
                wait_until(lambda: not _loop_attached(self.loop), DETACH_TIMEOUT_S, f"{self.loop} to detach")
            except TimeoutError as exc:
                problems.append(str(exc))
        if self.process is not None:
            if _mounted(self.fuse_dir):
                if subprocess.run(["fusermount", "-u", self.fuse_dir], capture_output=True,
                                  check=False).returncode != 0:
                    problems.append(f"{self.fuse_dir} was busy: lazily unmounted")
                    subprocess.run(["fusermount", "-u", "-z", self.fuse_dir], check=False)
            elif self.process.poll() is None:
                self.process.terminate()  # never got as far as mounting: stop it (ours, by pid)
            if _wait_for_exit(self.process):
                problems.append(f"rbd-fuse (pid {self.process.pid}) did not exit: killed")
            elif self.process.returncode != 0:
                problems.append(f"rbd-fuse exited with {self.process.returncode}: {self.daemon_log()}")
        for directory in (self.mountpoint, self.fuse_dir):
            if directory and not _mounted(directory):
                os.rmdir(directory)
            elif directory:
                problems.append(f"{directory} is still mounted: left in place")
        self.log.close()
        return problems


@contextmanager
def rbd_filesystem(conf: str, pool: str, image: str, mkfs: bool = True):
    """Mount an ext4 file system on the RBD image `pool/image` and yield its mountpoint.

    rbd-fuse runs in the foreground (so the pid is ours) and shows only this image (`-r`); the
    image's file is attached to a free loop device, made ext4 when `mkfs` (refused unless the image
    is blank) and mounted on a fresh directory. On leaving, even after a failure: sync, unmount,
    detach the loop device, unmount rbd-fuse and wait for it to exit (rbd-fuse then closes the image,
    flushing librbd's cache and dropping its watch and lock), remove the directories. A teardown
    that had to force anything (lazy unmount, kill) raises unless the body already raised.
    """
    state = _RbdMount(conf, pool, image)
    try:
        mountpoint = state.start(mkfs)
        yield mountpoint
    except BaseException:
        state.stop()
        raise
    problems = state.stop()
    if problems:
        raise RuntimeError(f"rbd_filesystem({pool}/{image}) teardown: {'; '.join(problems)}")


def write(path: str, text: str) -> None:
    """Write `text` and fsync it, so it has reached the volume, not just the page cache."""
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read()
