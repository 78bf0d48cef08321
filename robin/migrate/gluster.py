"""A GlusterFS volume (or a directory of one) to migrate, and its read-only FUSE mount.

A source is written as Gluster's own mount syntax: `server[,server2...][:port]:/volume[/sub/dir]`. The FUSE
client (`glusterfs`) fetches the volume's layout from the first server that answers, then talks to the bricks.
It is always mounted read-only: a migration never changes what it migrates.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from robin import mounts
from robin.migrate.errors import MigrationError

DEFAULT_PORT = 24007  # glusterd's management port, from which clients fetch volfiles
MOUNT_TIMEOUT_S = 60
GIVE_UP_S = 5.0  # how long a client whose mount fails its first lookup may take to exit, if it gave up
PROBE_TIMEOUT_S = 5.0  # a connection to glusterd, to say why the client gave up
_HEAD = re.compile(r"(?P<servers>[^:].*?)(?::(?P<port>\d+))?")
_SERVER = re.compile(r"\[[0-9a-f:]+\]|[a-z0-9.-]+")
_VOLUME = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SOURCE_FAILED = "source_failed"  # the source stopped answering once mounted: its client's log is kept
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

    def addresses(self) -> list[str]:
        """host:port of each server, as the client asks them in turn."""
        return [f"{server}:{self.port}" for server in self.servers]


def client_argv(source: GlusterSource, mountpoint: str, log_file: str) -> list[str]:
    """The FUSE client in the foreground (-N: its pid is the one we started, and it exits on unmount)."""
    # Only read and copied: nothing on it may act as a device, gain privileges or run. --acl: the POSIX ACLs are
    # read as the xattrs system.posix_acl_*, which the client otherwise hides.
    argv = ["glusterfs", "-N", "--read-only", "--acl", "--fuse-mountopts=nodev,nosuid,noexec",
            f"--volfile-id={source.volume}", f"--log-file={log_file}", "--process-name=fuse"]
    argv += [f"--volfile-server={server}" for server in source.servers]
    # After the servers: the client gives this port to the servers named before it, and a server named after it
    # gets 24007 (with the port first, a source at another port was fetched from 24007 and mounted silently).
    return argv + [f"--volfile-server-port={source.port}", mountpoint]


@contextmanager
def mounted(source: GlusterSource, work_dir: str, daemons: mounts.Daemons | None = None):
    """The source's directory, read-only, for as long as the block runs; unmounted and its client gone after, its
    mountpoint removed, and the client's log too, unless the mount failed or the source stopped answering (its
    client or bricks gone) while the block ran: then the error names the log, which is kept. A read of the block
    that fails because the source stopped answering is turned into that error."""
    daemons = daemons or mounts.Daemons()
    mountpoint = os.path.join(os.path.realpath(work_dir), "source")
    os.makedirs(mountpoint, exist_ok=True)
    if mounts.mount_at(mountpoint) is not None:
        _unmount(mountpoint, daemons, [])  # a killed earlier run's mount: its client may hold a stale layout
    log_file = client_log(work_dir)
    with suppress(FileNotFoundError):
        os.unlink(log_file)  # an earlier run's: the log a message names is this mount's alone
    pid = daemons.start(client_argv(source, mountpoint, log_file), log_file)
    try:
        _wait_mounted(source, mountpoint, pid, daemons, log_file)
    except BaseException:
        _unmount(mountpoint, daemons, [pid])
        remove_empty_dir(mountpoint)
        raise  # its message names the log, which is kept
    source_failed = False
    try:
        root = _directory(source, mountpoint)
        try:
            yield root
        except OSError:
            check_answering(source, root, log_file)  # a read failed because the source is gone: say so
            raise
    except SourceError as exc:
        source_failed = exc.code == SOURCE_FAILED
        raise
    finally:
        _unmount(mountpoint, daemons, [pid])
        remove_empty_dir(mountpoint)
        if not source_failed:
            with suppress(FileNotFoundError):
                os.unlink(log_file)


def client_log(work_dir: str) -> str:
    """The log of the FUSE client that mounts a source in `work_dir`."""
    return os.path.join(os.path.realpath(work_dir), "glusterfs-client.log")


def check_answering(source: GlusterSource, root: str, log_file: str) -> None:
    """Raise source_failed, naming the client's log, when the mounted source no longer answers: its client died
    or lost its bricks, and every read fails (ENOTCONN). A listing always asks the client (a stat may be
    answered from the kernel's cache)."""
    try:
        with os.scandir(root) as listing:
            next(listing, None)
    except OSError as exc:
        raise SourceError(SOURCE_FAILED, f"{source} stopped answering during the migration ({exc.strerror})"
                                          f"{_last_error(log_file)}; the client's log: {log_file}") from exc


def remove_empty_dir(path: str) -> None:
    """rmdir: never a directory that holds anything, nor a mountpoint still in use (EBUSY)."""
    with suppress(FileNotFoundError, OSError):
        os.rmdir(path)


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
            raise SourceError("source_unreachable", f"cannot mount {source}: {_why_not(source, log_file)}; "
                                                    f"the client's log: {log_file}")
        return mounts.mount_at(mountpoint) is not None

    if not mounts.wait_for(ready, MOUNT_TIMEOUT_S):
        daemons.stop(pid)
        raise SourceError("source_unreachable", f"cannot mount {source}: the GlusterFS client did not mount it "
                                                f"within {MOUNT_TIMEOUT_S}s{_last_error(log_file)}; the client's "
                                                f"log: {log_file}")
    # The mount shows before the client has the volume's layout; the first lookup waits for it, or fails.
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if mounts.wait_for(lambda: not daemons.alive(pid), GIVE_UP_S):
            # It could not fetch the volume, and showed the mount before it gave up (seen on a busy host).
            raise SourceError("source_unreachable", f"cannot mount {source}: {_why_not(source, log_file)}; the "
                                                    f"client's log: {log_file}") from exc
        raise SourceError("source_unreachable", f"cannot read {source} ({exc.strerror}){_last_error(log_file)}; "
                                                f"the client's log: {log_file}") from exc


def _why_not(source: GlusterSource, log_file: str) -> str:
    """Why the client gave up, in one line: what glusterd answered (the client logs the refusal of the server it
    asked last), else what a connection to each server meets (the client does not log why one failed)."""
    errors = _log_errors(log_file)
    refusals = [(server, said) for server, said in errors if "failed to fetch volume file" in said]
    if refusals:
        server, said = refusals[-1]
        return (f"glusterd at {server or source.servers[0]}:{source.port} said {said!r} (no started volume "
                f"{source.volume!r} there?)")
    failures = {address: _connection_failure(address) for address in source.addresses()}
    if all(failures.values()):
        return "no glusterd answers at " + ", ".join(f"{address} ({why})" for address, why in failures.items())
    return f"the GlusterFS client gave up on {', '.join(failures)}{_last_error(log_file)}"


def _last_error(log_file: str) -> str:
    errors = _log_errors(log_file)
    return f": the client said {errors[-1][1]!r}" if errors else ""


_LOG_LINE = re.compile(r"\[[^]]*\] (?P<level>[A-Z]) (?:\[MSGID: \d+\] )?\[[^]]*\] [^:]*: (?P<text>.*)")
_NEXT_SERVER = re.compile(r"connecting to next volfile server (\S+)")
MAX_SAID = 300  # characters of the client's own words in a message


def _log_errors(log_file: str) -> list[tuple[str | None, str]]:
    """The error lines of a GlusterFS log (level E) as (the volfile server the client was asking, the text)."""
    try:
        with open(log_file, errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    server, errors = None, []
    for line in lines:
        match = _LOG_LINE.fullmatch(line.rstrip())
        if not match:
            continue
        moved = _NEXT_SERVER.search(match["text"])
        if moved:
            server = moved.group(1)
        elif match["level"] == "E":
            errors.append((server, match["text"][:MAX_SAID]))
    return errors


def _connection_failure(address: str) -> str | None:
    """Why a TCP connection to host:port fails, or None when it succeeds."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            return None
    except socket.gaierror as exc:
        return f"unknown host: {exc.strerror}"
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S:g}s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def _unmount(mountpoint: str, daemons: mounts.Daemons, pids: list[int]) -> None:
    if mounts.mount_at(mountpoint) is not None:
        done = subprocess.run(["umount", mountpoint], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)  # busy: detach it
    daemons.wait_gone([pid for pid in pids if daemons.alive(pid)])
