"""A private, real GlusterFS server for tests: glusterd, its bricks and FUSE mounts, on 127.0.0.1 only.

    server = GlusterServer(base_dir).start()
    server.create_volume("src")
    with server.mount("src") as path: ...
    server.stop()

What was learned by experiment with GlusterFS 10.3 (Debian 12), and why the code looks the way it does:

- glusterd reads its own volfile (`-f`): `working-directory`, `run-directory` (brick pid files),
  `glusterd-sockfile` (the CLI's unix socket), `logging-directory` (brick logs), `base-port`/`max-port`
  (brick ports) and `transport.socket.bind-address`, which glusterd also hands to every brick it starts
  (`--xlator-option transport.socket.bind-address=...`), so bricks listen on 127.0.0.1 too.
- The management port cannot be chosen freely: glusterd starts each brick as `glusterfsd -s <brick host>`
  without a port, so the brick fetches its volfile and signs in to the port mapper at <brick host>:24007;
  on any other port the brick exits at once and `volume start` fails. Hence glusterd listens on
  127.0.0.1:24007 and only one GlusterServer (and no system glusterd) can run per network namespace.
- glusterd still writes a few global paths whatever its volfile says: /var/lib/glusterd/{ss_brick,
  geo-replication}, /var/run/gluster/snaps, and each brick's unix socket /var/run/gluster/<hash>.socket
  (`-S`, named from the brick; stop() removes ours). The CLI writes /var/log/glusterfs/cli.log unless
  given `--log-file`.
- The CLI refuses "localhost" and "127.0.0.1" as brick hosts; "127.1" is the same address spelled so
  that it passes, and glusterd recognises it as local. A brick on the root file system needs `force`.
- SIGTERM to glusterd does not stop the bricks (they are daemons of their own, reparented to pid 1, which
  does not reap here: a dead brick lingers as a zombie, so "gone" means "no process or a zombie").
- The FUSE client (`glusterfs -N`, our child) shows up in /proc/mounts within ~20 ms; the first access
  blocks until it has connected to the brick, which takes a few more ms. `--read-only` gives a `ro`
  mount whose writes fail with EROFS. After `umount` the client exits by itself within ~0.1 s; after a
  lazy one it lives on while files are open (then it is SIGTERMed). The client forks helpers that pid 1
  leaves as zombies; they hold nothing.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.net import wait_until

MANAGEMENT_PORT = 24007  # fixed by glusterd itself, see above
BRICK_HOST = "127.1"  # 127.0.0.1, spelled so that the CLI accepts it as a brick host
BRICK_PORTS = (49152, 60999)
START_TIMEOUT_S = 30
CLI_TIMEOUT_S = 60
MOUNT_TIMEOUT_S = 30
EXIT_TIMEOUT_S = 15
LAZY_EXIT_TIMEOUT_S = 2


class GlusterError(RuntimeError):
    pass


class GlusterServer:
    host = "127.0.0.1"

    def __init__(self, base_dir: Path):
        self.base_dir = Path(base_dir)
        self.port = MANAGEMENT_PORT
        self.working_dir = self.base_dir / "glusterd"
        self.run_dir = self.base_dir / "run"
        self.log_dir = self.base_dir / "log"
        self.bricks_dir = self.base_dir / "bricks"
        self.mounts_dir = self.base_dir / "mnt"
        self.volfile = self.base_dir / "glusterd.vol"
        self.socket_path = self.run_dir / "glusterd.socket"
        self._glusterd: subprocess.Popen | None = None
        self._mounts: dict[Path, subprocess.Popen] = {}

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> GlusterServer:
        for directory in (self.working_dir, self.run_dir, self.log_dir, self.bricks_dir, self.mounts_dir):
            directory.mkdir(parents=True, exist_ok=True)
        _require_free_port(self.host, self.port)
        self.volfile.write_text(self._glusterd_volfile())
        with open(self.log_dir / "glusterd.stdout", "ab") as output:
            # -N: stay in the foreground, so that the pid we hold is glusterd's own.
            self._glusterd = subprocess.Popen(
                ["glusterd", "-N", "-f", str(self.volfile), "-p", str(self.run_dir / "glusterd.pid"),
                 "-l", str(self.log_dir / "glusterd.log")],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: self._glusterd.poll() is not None or self._answers(), START_TIMEOUT_S, "glusterd")
            if self._glusterd.poll() is not None:
                raise GlusterError(f"glusterd exited with {self._glusterd.returncode}: {self._log_tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Unmount our mounts, then stop glusterd (so it restarts nothing) and our bricks, all by pid."""
        for mountpoint, client in list(self._mounts.items()):
            _unmount(mountpoint, client)
            self._mounts.pop(mountpoint, None)
        if self._glusterd is not None:
            _stop_child(self._glusterd)
            self._glusterd = None
        for pid_file in self._brick_pid_files():
            pid = _brick_pid(pid_file)
            if pid is not None:
                socket_file = _brick_socket(pid)
                _stop_daemon(pid)
                if socket_file:
                    socket_file.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)

    # --- volumes ------------------------------------------------------------------------------------

    def create_volume(self, name: str) -> str:
        brick = self.brick_path(name)
        brick.mkdir(parents=True, exist_ok=True)
        self.cli("volume", "create", name, f"{BRICK_HOST}:{brick}", "force")  # force: brick on the root fs
        self.cli("volume", "start", name)
        return name

    def delete_volume(self, name: str) -> None:
        sockets = [_brick_socket(pid) for pid in map(_brick_pid, self._brick_pid_files(name)) if pid is not None]
        self.cli("volume", "stop", name)  # kills the volume's brick and removes its pid file, not its socket
        self.cli("volume", "delete", name)
        for socket_file in filter(None, sockets):
            socket_file.unlink(missing_ok=True)
        shutil.rmtree(self.brick_path(name), ignore_errors=True)

    def kill_bricks(self, name: str) -> None:
        """SIGKILL the volume's bricks, as a failing server would stop serving it; restart_bricks starts them."""
        for pid in filter(None, map(_brick_pid, self._brick_pid_files(name))):
            os.kill(pid, signal.SIGKILL)

    def restart_bricks(self, name: str) -> None:
        self.cli("volume", "start", name, "force")  # force: starts the bricks that are not running

    def brick_path(self, name: str) -> Path:
        return self.bricks_dir / name

    def pids(self) -> list[int]:
        """glusterd's pid and the pids of our running bricks."""
        pids = [self._glusterd.pid] if self._glusterd is not None and self._glusterd.poll() is None else []
        return pids + [pid for pid in map(_brick_pid, self._brick_pid_files()) if pid is not None]

    def cli(self, *args: str) -> str:
        """Run the gluster CLI against this glusterd; script mode answers its y/n questions."""
        result = subprocess.run(
            ["gluster", "--mode=script", f"--glusterd-sock={self.socket_path}",
             f"--log-file={self.log_dir / 'cli.log'}", *args],
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        if result.returncode != 0:
            raise GlusterError(f"gluster {' '.join(args)}: {result.stdout.strip()} {result.stderr.strip()}")
        return result.stdout

    # --- mounts -------------------------------------------------------------------------------------

    @contextmanager
    def mount(self, volume: str, readonly: bool = False) -> Iterator[Path]:
        mountpoint = self.mounts_dir / f"{volume}-{len(self._mounts)}-{os.urandom(3).hex()}"
        mountpoint.mkdir(parents=True)
        # --acl: POSIX ACLs can be set and read (as system.posix_acl_* too), as on a client mounted with -o acl.
        argv = ["glusterfs", "-N", "--acl", f"--volfile-server={self.host}", f"--volfile-server-port={self.port}",
                f"--volfile-id={volume}", f"--log-file={self.log_dir / (mountpoint.name + '.log')}"]
        if readonly:
            argv.append("--read-only")
        client = subprocess.Popen([*argv, str(mountpoint)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  start_new_session=True)
        self._mounts[mountpoint] = client
        try:
            wait_until(lambda: client.poll() is not None or _mounted(mountpoint), MOUNT_TIMEOUT_S, "glusterfs mount")
            if client.poll() is not None:
                raise GlusterError(f"glusterfs client exited with {client.returncode}: "
                                   f"{client.stderr.read().decode(errors='replace')[-2000:]}")
            os.statvfs(mountpoint)  # blocks until the client has connected to the brick
            yield mountpoint
        finally:
            _unmount(mountpoint, client)
            self._mounts.pop(mountpoint, None)
            with suppress(FileNotFoundError):  # stop() may have cleaned up first
                mountpoint.rmdir()

    # --- internals ----------------------------------------------------------------------------------

    def _glusterd_volfile(self) -> str:
        options = {
            "working-directory": self.working_dir,
            "run-directory": self.run_dir,
            "glusterd-sockfile": self.socket_path,
            "logging-directory": self.log_dir,
            "transport-type": "socket",
            "transport.socket.listen-port": self.port,
            "transport.socket.bind-address": self.host,  # glusterd passes it on to the bricks
            "base-port": BRICK_PORTS[0],
            "max-port": BRICK_PORTS[1],
            "ping-timeout": 0,
            "event-threads": 1,
        }
        lines = [f"    option {key} {value}" for key, value in options.items()]
        return "\n".join(["volume management", "    type mgmt/glusterd", *lines, "end-volume", ""])

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            self.cli("volume", "list")
            return True
        except (GlusterError, subprocess.TimeoutExpired):
            return False

    def _brick_pid_files(self, volume: str = "*") -> list[Path]:
        # glusterd writes <run-directory>/vols/<volume>/<host>-<brick path>.pid for each brick it starts.
        return sorted((self.run_dir / "vols").glob(f"{volume}/*.pid"))

    def _log_tail(self) -> str:
        log = self.log_dir / "glusterd.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


# --- processes ------------------------------------------------------------------------------------

def _require_free_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT from the last run is fine
        try:
            probe.bind((host, port))
        except OSError as error:
            raise GlusterError(f"{host}:{port} is taken (another glusterd?); bricks only find glusterd there: "
                               f"{error}") from error


def _brick_pid(pid_file: Path) -> int | None:
    """The pid in a brick pid file, if that process is alive and really is that brick (not a reused pid)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(pid_file).encode() in cmdline and _alive(pid) else None


def _brick_socket(pid: int) -> Path | None:
    """The unix socket glusterd told this brick to create (`-S`, always under /var/run/gluster)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    return Path(cmdline[cmdline.index("-S") + 1]) if "-S" in cmdline[:-1] else None


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (pid 1 here does not reap orphaned daemons)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_daemon(pid: int) -> None:
    """SIGTERM a process that is not our child, SIGKILL it after a deadline."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not _alive(pid), EXIT_TIMEOUT_S, f"pid {pid} to exit")
            return
        except TimeoutError:
            continue


def _stop_child(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(EXIT_TIMEOUT_S)


# --- mounts ---------------------------------------------------------------------------------------

def _mounted(path: Path) -> bool:
    # /proc/self/mounts escapes spaces and the like as octal (\040); our mountpoints have none.
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def _unmount(mountpoint: Path, client: subprocess.Popen) -> None:
    """umount, lazily if busy; then make sure our client process is gone (it exits on its own when unmounted)."""
    if _mounted(mountpoint):
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
    grace = EXIT_TIMEOUT_S
    if _mounted(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
        grace = LAZY_EXIT_TIMEOUT_S  # the client serves the open files until it is told to go
    try:
        client.wait(grace)
    except subprocess.TimeoutExpired:
        _stop_child(client)


def listening_sockets(pids: list[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket (IPv4 and IPv6) owned by one of `pids`, via `ss`."""
    output = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in output.splitlines():
        fields = line.split()
        local, users = fields[3], " ".join(fields[5:])
        address, port = local.rsplit(":", 1)
        found += [(address.strip("[]"), int(port), pid) for pid in pids if f"pid={pid}," in users]
    return found
