"""What staging knows of this machine: the mount table, loop devices, block device sizes, file systems, and the
FUSE daemons it starts. Everything is read from the kernel (/proc/self/mountinfo, /sys) every time it is
needed, never remembered, so that a restarted process sees exactly what its predecessor left.

Every command runs with a timeout and without a shell; a failure raises ToolError (a MountError, "failed") that
carries the command and its stderr.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from robin.mounts.errors import FAILED, REFUSED, MountError

log = logging.getLogger(__name__)

TOOL_TIMEOUT_S = 60  # mount, losetup, blkid: seconds when healthy; a minute means something is stuck
LONG_TOOL_TIMEOUT_S = 600  # mkfs, resize2fs, xfs_growfs on a large image
DETACH_TIMEOUT_S = 10  # a loop device lets go of its backing file once nothing holds it open
EXIT_TIMEOUT_S = 40  # ceph-fuse may wait for its client shutdown timeout after an unmount
POLL_S = 0.05
BLANK_PROBE_BYTES = 1 << 20  # mkfs only on an image whose first MiB is zeros, on top of blkid's verdict
# How every mount of a volume's contents (tenants' data) is made: device nodes and set-id bits on it are inert.
TENANT_DATA_OPTIONS = ("nodev", "nosuid")


class ToolError(MountError):
    """A command failed or timed out, with the command and what it said on stderr."""

    def __init__(self, message: str):
        super().__init__(FAILED, message)


def run(*argv: str, timeout: float = TOOL_TIMEOUT_S, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run a command (no shell, stdin closed) and return it when its exit status is in `ok`."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except FileNotFoundError as exc:
        raise ToolError(f"{argv[0]} is not installed on this node") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{' '.join(argv)} did not finish within {timeout:g}s") from exc
    if done.returncode not in ok:
        raise ToolError(f"{' '.join(argv)} failed ({done.returncode}): {_gist(done.stderr or done.stdout)}")
    return done


def _gist(said: str, lines: int = 6) -> str:
    """Its first and last lines: the error, not the usage text some tools print after it."""
    said_lines = said.strip().splitlines()
    if len(said_lines) > 2 * lines:
        said_lines = said_lines[:lines] + ["..."] + said_lines[-lines:]
    return "\n".join(said_lines)[-2000:]


def wait_for(predicate, timeout: float) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


# --- the mount table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    device: str  # "major:minor" of the file system (bind mounts share their source's)
    root: str  # the path inside that file system which is mounted here ("/loop3" for a bound /dev/loop3)
    mountpoint: str
    options: frozenset[str]  # this mount's own options: ro/rw, nosuid, ...
    fstype: str
    source: str

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def mount_table() -> list[Mount]:
    mounts = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            separator = fields.index("-", 6)  # optional fields (shared:N ...) come before the "-"
            mounts.append(Mount(device=fields[2], root=_unescape(fields[3]), mountpoint=_unescape(fields[4]),
                                options=frozenset(fields[5].split(",")), fstype=fields[separator + 1],
                                source=_unescape(fields[separator + 2])))
    return mounts


def canonical(path: str) -> str:
    """The path as the mount table spells it (symbolic links resolved)."""
    return os.path.realpath(path)


def mount_at(path: str) -> Mount | None:
    """The mount on top at `path` (the table lists mounts in the order they were made), or None."""
    path = canonical(path)
    found = [mount for mount in mount_table() if mount.mountpoint == path]
    return found[-1] if found else None


def mounts_under(directory: str) -> list[Mount]:
    directory = canonical(directory)
    return [m for m in mount_table() if m.mountpoint == directory or m.mountpoint.startswith(directory + "/")]


def mount(source: str, target: str, fs_type: str | None = None, options: list[str] | tuple[str, ...] = ()) -> None:
    argv = ["mount"]
    if fs_type:
        argv += ["-t", fs_type]
    if options:
        argv += ["-o", ",".join(options)]
    run(*argv, source, target)


def bind(source: str, target: str, readonly: bool, device: bool = False) -> None:
    """Bind-mount `source` on `target`; read-only takes a second step, as a bind mount ignores `ro` at first.
    `device`: the source is a block device node, which the pod must be able to open (never nodev)."""
    run("mount", "--bind", source, target)
    if readonly:
        # Named again: a remount sets the mount's flags anew, and must not drop the stage's nodev, nosuid.
        kept = ("nosuid",) if device else TENANT_DATA_OPTIONS
        try:
            run("mount", "-o", ",".join(("remount", "bind", "ro", *kept)), target)
        except ToolError:
            run("umount", target)  # never leave it writable
            raise


def unmount(path: str) -> None:
    """Unmount everything stacked on `path` (a no-op when nothing is)."""
    while mount_at(path) is not None:
        run("umount", canonical(path))


def unmount_dead(path: str) -> None:
    """Unmount a FUSE mount whose daemon is gone; lazily if something on this host still holds it open: nothing
    can read through it any more, and the path is free for its new mount at once."""
    if mount_at(path) is not None:
        try:
            run("umount", canonical(path))
        except ToolError:
            log.warning("%s is busy: detaching it lazily", path)
            run("umount", "-l", canonical(path))


# --- block devices ----------------------------------------------------------------------------------------


def device_number(path: str) -> str | None:
    """"major:minor" of the block device node `path`, or None if it is not one."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"


def device_path(number: str) -> str:
    """/dev/<name> of the block device "major:minor"."""
    return "/dev/" + os.path.basename(os.path.realpath(f"/sys/dev/block/{number}"))


def _sysfs(device: str, attribute: str) -> str:
    # By number, so that a device node bound elsewhere (a published block volume) reads as its device.
    number = device_number(device)
    if number is None:
        raise ToolError(f"{device} is not a block device")
    return Path(f"/sys/dev/block/{number}/{attribute}").read_text().strip()


def device_size(device: str) -> int:
    """Bytes, from sysfs (512-byte sectors whatever the device's block size)."""
    return int(_sysfs(device, "size")) * 512


def device_readonly(device: str) -> bool:
    return _sysfs(device, "ro") == "1"


def device_users(device: str) -> list[str]:
    """Mountpoints that use `device`: a file system on it, or the device node bound somewhere (a block volume).
    A bound device node shows up as a mount of devtmpfs whose root is the node's name."""
    number = device_number(device)
    name = "/" + os.path.basename(device)
    return [m.mountpoint for m in mount_table()
            if m.device == number or (m.fstype == "devtmpfs" and m.root == name)]


# --- loop devices ------------------------------------------------------------------------------------------


def loop_devices() -> dict[str, str]:
    """{"/dev/loopN": backing file} of every attached loop device (detached ones have no backing_file)."""
    attached = {}
    for entry in Path("/sys/block").glob("loop*"):
        try:
            attached[f"/dev/{entry.name}"] = (entry / "loop" / "backing_file").read_text().strip()
        except FileNotFoundError:
            continue
    return attached


def attach_loop(path: str, readonly: bool) -> str:
    argv = ["losetup", "--find", "--show"] + (["--read-only"] if readonly else []) + [path]
    return run(*argv).stdout.strip()


def detach_loop(device: str) -> None:
    attached = Path(f"/sys/block/{os.path.basename(device)}/loop/backing_file")
    if not attached.exists():
        return
    run("losetup", "--detach", device, ok=(0, 1))  # 1: it went away meanwhile
    if not wait_for(lambda: not attached.exists(), DETACH_TIMEOUT_S):
        raise ToolError(f"{device} is still attached {DETACH_TIMEOUT_S}s after losetup --detach: something holds it")


def refresh_loop(device: str) -> None:
    """Make the loop device take its backing file's current size (it keeps the size it had when attached)."""
    run("losetup", "--set-capacity", device)


# --- file systems ------------------------------------------------------------------------------------------

FILESYSTEMS = ("ext4", "xfs")
# Said, not left to the superblock's defaults: ACLs and user xattrs are the workload's data (XFS always has both).
FS_MOUNT_OPTIONS = {"ext4": ("acl", "user_xattr")}


def probe(device: str) -> dict[str, str]:
    """What blkid finds on the device itself (-p: no cache): {"TYPE": "ext4", ...}, {"PTTYPE": ...} for a
    partition table, {} for nothing."""
    done = run("blkid", "-p", "-o", "export", device, ok=(0, 2))  # 2: no signature found
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def starts_with_zeros(device: str, length: int = BLANK_PROBE_BYTES) -> bool:
    with open(device, "rb") as handle:
        return not handle.read(length).strip(b"\0")


def make_filesystem(device: str, fs_type: str) -> None:
    if fs_type == "ext4":
        # No discard (the image is new and thin) and lazy inode tables: seconds, not minutes, on a big image.
        run("mkfs.ext4", "-q", "-m", "0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", device,
            timeout=LONG_TOOL_TIMEOUT_S)
    elif fs_type == "xfs":
        run("mkfs.xfs", "-q", "-K", device, timeout=LONG_TOOL_TIMEOUT_S)  # no -f: it refuses an existing fs too
    else:
        raise ValueError(fs_type)


def check_filesystem(fs_type: str, device: str) -> None:
    """What a careful operator runs before mounting a file system whose device vanished under it, as a boot does
    after a crash: `e2fsck -p` for ext4 (replays the journal, repairs only what is safe without a person, and
    refuses the rest); nothing for xfs, whose log is replayed by the mount and whose xfs_repair is for a person.
    A file system that needs more than that is refused, not mounted."""
    if fs_type not in ("ext2", "ext3", "ext4"):
        return
    done = run("e2fsck", "-p", device, timeout=LONG_TOOL_TIMEOUT_S, ok=(0, 1, 2, 4, 8))
    if done.returncode >= 4:  # 0: clean, 1: errors corrected, 2: corrected (reboot advised for a root fs)
        raise MountError(REFUSED, f"e2fsck -p {device} found errors it may not repair unattended (exit status "
                                  f"{done.returncode}): not mounting it; run e2fsck on it by hand: "
                                  f"{_gist(done.stdout + done.stderr)}")


def grow_filesystem(fs_type: str, device: str, mountpoint: str) -> None:
    """Grow a mounted file system to its device's size (a no-op when it already fills it)."""
    if fs_type in ("ext2", "ext3", "ext4"):
        # Growing a mounted ext4 needs CAP_SYS_RESOURCE ("Permission denied to resize filesystem" without it).
        run("resize2fs", device, timeout=LONG_TOOL_TIMEOUT_S)
    elif fs_type == "xfs":
        run("xfs_growfs", "-d", mountpoint, timeout=LONG_TOOL_TIMEOUT_S)
    else:
        raise MountError(REFUSED, f"cannot grow a {fs_type} file system")


# --- FUSE daemons ------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphaned daemon's zombie lingers until init reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _command_line(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class Daemons:
    """FUSE daemons (rbd-fuse, ceph-fuse), each in its own session so that they outlive the process that started
    them, and found again by an argument only they carry (their volume's ceph.conf), never by name."""

    def __init__(self):
        self._children: dict[int, subprocess.Popen] = {}  # only to reap the ones this process started
        self._lock = threading.Lock()

    def start(self, argv: list[str], log_path: str) -> int:
        # A file, not a pipe: the daemon writes to it for as long as it runs, after this process is gone too.
        with open(log_path, "ab") as log_file:
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                           start_new_session=True)
            except FileNotFoundError as exc:
                raise ToolError(f"{argv[0]} is not installed on this node") from exc
        with self._lock:
            self._children[process.pid] = process
        return process.pid

    def alive(self, pid: int) -> bool:
        with self._lock:
            child = self._children.get(pid)
        if child is not None:
            return child.poll() is None  # and reaps it once it has exited
        return _alive(pid)

    def exit_status(self, pid: int) -> int | None:
        with self._lock:
            child = self._children.get(pid)
        return child.poll() if child is not None else None

    @staticmethod
    def using(argument: str) -> list[int]:
        """Pids of the processes that have `argument` as one of their arguments."""
        return [int(pid) for pid in os.listdir("/proc")
                if pid.isdigit() and argument in _command_line(pid)[1:] and _alive(int(pid))]

    def wait_gone(self, pids: list[int], timeout: float = EXIT_TIMEOUT_S) -> None:
        """Wait for these daemons to exit (their mount is gone); SIGKILL, by pid, any still there after `timeout`."""
        if not wait_for(lambda: not any(self.alive(pid) for pid in pids), timeout):
            for pid in pids:
                if self.alive(pid):
                    log.warning("pid %d still runs %gs after its unmount: killing it", pid, timeout)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
            wait_for(lambda: not any(self.alive(pid) for pid in pids), DETACH_TIMEOUT_S)
        with self._lock:
            for pid in pids:
                if pid in self._children and self._children[pid].returncode is not None:
                    del self._children[pid]

    def stop(self, pid: int) -> None:
        """Stop a daemon that never got as far as a working mount."""
        if self.alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.wait_gone([pid], DETACH_TIMEOUT_S)


def log_tail(path: str, length: int = 1500) -> str:
    try:
        return Path(path).read_text(errors="replace")[-length:].strip()
    except OSError:
        return ""
