"""A GlusterFS volume (or a directory of one) to migrate, and its read-only FUSE mount.

A source is written as Gluster's own mount syntax: `server[,server2...][:port]:/volume[/sub/dir]`. The FUSE
client (`glusterfs`) fetches the volume's layout from the first server that answers, then talks to the bricks.
It is always mounted read-only: a migration never changes what it migrates.
"""
from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass

from robin import mounts
from robin.migrate.errors import MigrationError

DEFAULT_PORT = 24007  # glusterd's management port, from which clients fetch volfiles
MOUNT_TIMEOUT_S = 60
_HEAD = re.compile(r"(?P<servers>[^:].*?)(?::(?P<port>\d+))?")
_SERVER = re.compile(r"\[[0-9a-f:]+\]|[a-z0-9.-]+")
_VOLUME = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
USAGE = "write server[:port]:/volume[/directory], e.g. gluster-1:/data or 10.0.0.5,10.0.0.6:/data/app"


class SourceError(MigrationError):
    """A source that cannot be used or reached."""


@dataclass(frozen=True)
class GlusterSource:
    servers: tuple[str, ...]
    volume: str
    subdir: str = ""  # "" or "a/b": a directory of the volume
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, spec: str) -> GlusterSource:
        """One spelling per source, so that a rerun finds the migration an earlier one started however either was
        written: host names in lower case (DNS ignores case), each server once, glusterd's default port left out,
        no empty, trailing or repeated slashes (`gluster-1:24007://data/app/` is `gluster-1:/data/app`)."""
        head, _, path = spec.partition(":/")
        match = _HEAD.fullmatch(head)
        parts = [part for part in path.split("/") if part]
        if not match or not parts or _CONTROL.search(spec):
            raise SourceError("invalid_source", f"{spec!r} is not a GlusterFS source: {USAGE}")
        servers = tuple(dict.fromkeys(s.lower() for s in match["servers"].split(",") if s))
        if not servers or not all(_SERVER.fullmatch(s) for s in servers):
            raise SourceError("invalid_source", f"{spec!r}: {match['servers']!r} is not a list of server names")
        port = int(match["port"] or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise SourceError("invalid_source", f"{spec!r}: {port} is not a TCP port")
        volume, subdir = parts[0], parts[1:]
        if not _VOLUME.fullmatch(volume):
            raise SourceError("invalid_source", f"{spec!r}: {volume!r} is not a GlusterFS volume name")
        if any(part in (".", "..") for part in subdir):
            raise SourceError("invalid_source", f"{spec!r}: the directory may not contain . or ..")
        return cls(servers, volume, "/".join(subdir), port)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port != DEFAULT_PORT else ""
        subdir = f"/{self.subdir}" if self.subdir else ""
        return f"{','.join(self.servers)}{port}:/{self.volume}{subdir}"


def client_argv(source: GlusterSource, mountpoint: str, log_file: str) -> list[str]:
    """The FUSE client in the foreground (-N: its pid is the one we started, and it exits on unmount)."""
    # Only read and copied: nothing on it may act as a device, gain privileges or run.
    argv = ["glusterfs", "-N", "--read-only", "--fuse-mountopts=nodev,nosuid,noexec", f"--volfile-id={source.volume}",
            f"--log-file={log_file}", "--process-name=fuse"]
    argv += [f"--volfile-server={server}" for server in source.servers]
    # After the servers: the client gives this port to the servers named before it, and a server named after it
    # gets 24007 (with the port first, a source at another port was fetched from 24007 and mounted silently).
    return argv + [f"--volfile-server-port={source.port}", mountpoint]


@contextmanager
def mounted(source: GlusterSource, work_dir: str, daemons: mounts.Daemons | None = None):
    """The source's directory, read-only, for as long as the block runs; unmounted and its client gone after."""
    daemons = daemons or mounts.Daemons()
    mountpoint = os.path.join(os.path.realpath(work_dir), "source")
    os.makedirs(mountpoint, exist_ok=True)
    if mounts.mount_at(mountpoint) is not None:
        _unmount(mountpoint, daemons, [])  # a killed earlier run's mount: its client may hold a stale layout
    log_file = os.path.join(work_dir, "glusterfs-client.log")
    pid = daemons.start(client_argv(source, mountpoint, log_file), log_file)
    try:
        _wait_mounted(source, mountpoint, pid, daemons, log_file)
        yield _directory(source, mountpoint)
    finally:
        _unmount(mountpoint, daemons, [pid])


def _directory(source: GlusterSource, mountpoint: str) -> str:
    """The source's directory in the mount. Resolved, and refused if it leaves the mount: a symlink on the volume
    (its users' data) would otherwise have the migration copy this host's own files."""
    root = os.path.realpath(os.path.join(mountpoint, source.subdir))
    if root != mountpoint and not root.startswith(mountpoint + os.sep):
        raise SourceError("invalid_source", f"{source}: {source.subdir!r} leads out of the volume (a symlink)")
    if not os.path.isdir(root):
        raise SourceError("source_not_found", f"{source}: the volume has no directory {source.subdir!r}")
    return root


def _wait_mounted(source: GlusterSource, mountpoint: str, pid: int, daemons: mounts.Daemons, log_file: str) -> None:
    def ready() -> bool:
        if not daemons.alive(pid):
            raise SourceError("source_unreachable", f"cannot mount {source}: the GlusterFS client exited: "
                                                    f"{mounts.log_tail(log_file)}")
        return mounts.mount_at(mountpoint) is not None

    if not mounts.wait_for(ready, MOUNT_TIMEOUT_S):
        daemons.stop(pid)
        raise SourceError("source_unreachable", f"cannot mount {source} within {MOUNT_TIMEOUT_S}s: "
                                                f"{mounts.log_tail(log_file)}")
    # The mount shows before the client has the volume's layout; the first lookup waits for it, or fails.
    try:
        os.stat(mountpoint)
    except OSError as exc:
        raise SourceError("source_unreachable", f"{source} is mounted but cannot be read: {exc}") from exc


def _unmount(mountpoint: str, daemons: mounts.Daemons, pids: list[int]) -> None:
    if mounts.mount_at(mountpoint) is not None:
        done = subprocess.run(["umount", mountpoint], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)  # busy: detach it
    daemons.wait_gone([pid for pid in pids if daemons.alive(pid)])
