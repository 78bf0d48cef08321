"""A single-node Ceph dev cluster (mon, mgr, memstore OSD, MDS) living entirely in one directory.

It is driven only through the Ceph command-line tools so that it works from any Python, needs no
bindings and never touches /etc/ceph, /var/lib/ceph or /var/run/ceph. The cluster listens on
127.0.0.1 only, on ports picked at creation, so several clusters (a developer's and a test's) can
run side by side. The OSD keeps its data in memory: a cluster whose daemons died cannot be revived
and is recreated from scratch.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(
    os.environ.get("ROBIN_DEV_CLUSTER_DIR") or Path.home() / ".local/state/robin/dev-cluster"
)

# (daemon type, id) in start order; the names double as pid/log file stems.
DAEMONS = (("mon", "a"), ("mgr", "x"), ("osd", "0"), ("mds", "a"))
FS_NAME = "cephfs"
RBD_POOL = "rbd"
FS_POOLS = ("cephfs_metadata", "cephfs_data")
PG_NUM = 8
# Thin: memstore only allocates what is written, this is just the size the OSD reports.
MEMSTORE_BYTES = 16 << 30

CEPH_COMMAND_TIMEOUT = 30.0  # one admin command; the mon answers in milliseconds when healthy
DAEMON_START_TIMEOUT = 30.0  # the daemon launcher returns once the forked daemon is initialised
STOP_GRACE = 10.0  # SIGTERM -> SIGKILL
POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 30
MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave room for the longest socket name

KEYS = {
    "mon.": {"mon": "allow *"},
    "client.admin": {"mon": "allow *", "mgr": "allow *", "osd": "allow *", "mds": "allow *"},
    "mgr.x": {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"},
    "osd.0": {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"},
    "mds.a": {"mon": "allow profile mds", "mgr": "allow profile mds", "osd": "allow *",
              "mds": "allow *"},
}

CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{v2_port},v1:127.0.0.1:{v1_port}]
public addr = 127.0.0.1
public network = 127.0.0.1/32
ms bind ipv4 = true
ms bind ipv6 = false

auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {dir}/keyring

run dir = {dir}/run
crash dir = {dir}/crash
log file = {dir}/log/$name.log
mon cluster log file = {dir}/log/cluster.log

osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = {pg_num}
osd pool default pgp num = {pg_num}
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0

rbd default features = layering,exclusive-lock,object-map,fast-diff,deep-flatten
rbd default clone format = 2

[mon]
mon data = {dir}/mon/$id
pid file = {dir}/run/$name.pid
mon allow pool size one = true
mon allow pool delete = true
# Snapshot create/remove wait for a paxos round: 10 ms instead of the default 1 s.
paxos propose interval = 0.01
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
# A dev box with a fairly full disk must not turn the cluster HEALTH_WARN.
mon data avail warn = 5
# Clone format 2 (no protected snapshots) needs mimic clients.
mon osd initial require min compat client = mimic
# Read by the mon when it creates the mgr map. Only what we use: restful wants a certificate.
mgr initial modules = iostat

[mgr]
mgr data = {dir}/mgr/$id
pid file = {dir}/run/$name.pid
# Publish PG states every second so the readiness wait sees active+clean sooner.
mgr stats period = 1
mgr tick period = 1

[osd]
osd data = {dir}/osd/$id
pid file = {dir}/run/$name.pid
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd mon report interval = 1

[mds]
mds data = {dir}/mds/$id
pid file = {dir}/run/$name.pid
mds beacon interval = 1
# Shutdown joins the rank pinger, which sleeps this long: SIGTERM took 5 s with the default.
mds ping interval = 1
"""


class DevClusterError(Exception):
    """The dev cluster could not be created, reached or stopped."""


@dataclass
class DevCluster:
    directory: Path

    def __post_init__(self) -> None:
        # Resolve once: daemons keep running after a chdir, and pid guards match on this path.
        self.directory = Path(self.directory).expanduser().absolute()

    @property
    def conf_path(self) -> Path:
        return self.directory / "ceph.conf"

    @property
    def keyring_path(self) -> Path:
        return self.directory / "keyring"

    # -- public API -------------------------------------------------------------------------

    def up(self, timeout: float = 90.0) -> Path:
        """Make sure a healthy cluster runs in the directory and return its ceph.conf."""
        deadline = time.monotonic() + timeout
        if self._daemon_pids() and all(self._alive_pids().values()):
            self._wait_ready(deadline)
            return self.conf_path
        # Some daemon is gone (crash, reboot): memstore data went with it, start over.
        self.down()
        try:
            self._create(deadline)
        except BaseException:
            self._stop_daemons()
            raise
        return self.conf_path

    def down(self) -> None:
        """Stop our daemons (and nothing else) and delete the directory."""
        self._stop_daemons()
        shutil.rmtree(self.directory, ignore_errors=True)

    def status(self) -> dict:
        alive = self._alive_pids()
        running = all(alive.values())
        health = self._health() if running else None
        return {
            "directory": str(self.directory),
            "conf": str(self.conf_path),
            "running": running,
            "healthy": health == "HEALTH_OK",
            "daemons": {
                name: {"pid": self._read_pid(name), "alive": is_alive}
                for name, is_alive in alive.items()
            },
            "health": health,
        }

    def is_healthy(self) -> bool:
        return all(self._alive_pids().values()) and self._health() == "HEALTH_OK"

    # -- creation ---------------------------------------------------------------------------

    def _create(self, deadline: float) -> None:
        self._check_path_length()
        for sub in ("run", "log", "crash", "mon/a", "mgr/x", "osd/0", "mds/a"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        v2_port, v1_port = _free_ports(2)
        self.conf_path.write_text(CONF_TEMPLATE.format(
            fsid=fsid, v2_port=v2_port, v1_port=v1_port, dir=self.directory, pg_num=PG_NUM,
            memstore_bytes=MEMSTORE_BYTES,
        ))
        self._create_keyring()
        self._create_mon(fsid, v2_port, v1_port)
        self._start_daemon("mon", "a")
        # Device monitoring would add a pool of its own, at some point after the OSD boots.
        # Module options only come from the mon's config database, not from ceph.conf, and
        # the mon only knows them once a mgr has run, hence --force.
        self._ceph("config", "set", "mgr", "mgr/devicehealth/enable_monitoring", "false",
                   "--force")
        self._start_daemon("mgr", "x")
        self._create_osd()
        self._start_daemon("osd", "0")
        self._create_pools_and_fs()
        self._start_daemon("mds", "a")
        self._wait_ready(deadline)

    def _check_path_length(self) -> None:
        longest = self.directory / "run" / "client.admin.asok"
        if len(str(longest)) > MAX_UNIX_SOCKET_PATH:
            raise DevClusterError(
                f"{self.directory} is too long for the daemons' unix sockets; use a shorter path"
            )

    def _create_keyring(self) -> None:
        for i, (entity, caps) in enumerate(KEYS.items()):
            args = ["ceph-authtool", str(self.keyring_path), "--gen-key", "-n", entity]
            if i == 0:
                args.insert(1, "--create-keyring")
            for service, cap in caps.items():
                args += ["--cap", service, cap]
            _run(args)
        self.keyring_path.chmod(0o600)

    def _create_mon(self, fsid: str, v2_port: int, v1_port: int) -> None:
        monmap = self.directory / "monmap"
        _run(["monmaptool", "--create", "--fsid", fsid, "--enable-all-features",
              "--addv", "a", f"[v2:127.0.0.1:{v2_port},v1:127.0.0.1:{v1_port}]", str(monmap)])
        # mkfs imports every key of the keyring, caps included, into the auth database.
        _run(["ceph-mon", "-c", str(self.conf_path), "--mkfs", "-i", "a",
              "--monmap", str(monmap), "--keyring", str(self.keyring_path)])
        monmap.unlink()

    def _create_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        self._ceph("osd", "new", osd_uuid, "0")
        _run(["ceph-osd", "-c", str(self.conf_path), "-i", "0", "--mkfs",
              "--osd-uuid", osd_uuid])

    def _create_pools_and_fs(self) -> None:
        for pool in (RBD_POOL, *FS_POOLS):
            self._ceph("osd", "pool", "create", pool, str(PG_NUM), str(PG_NUM))
        # What `rbd pool init` does, without needing librbd.
        self._ceph("osd", "pool", "application", "enable", RBD_POOL, "rbd")
        self._ceph("fs", "new", FS_NAME, *FS_POOLS)
        # A single MDS has no standby; without this the fs stays HEALTH_WARN.
        self._ceph("fs", "set", FS_NAME, "standby_count_wanted", "0")

    def _start_daemon(self, kind: str, daemon_id: str) -> None:
        name = f"{kind}.{daemon_id}"
        with open(self.directory / "log" / f"{name}.out", "ab") as out:
            # The launcher forks the daemon and exits once it is initialised; a new session
            # keeps a Ctrl-C aimed at our caller away from the daemon.
            proc = subprocess.run(
                [f"ceph-{kind}", "-c", str(self.conf_path), "-i", daemon_id],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, timeout=DAEMON_START_TIMEOUT, check=False,
            )
        if proc.returncode != 0:
            raise DevClusterError(
                f"{name} failed to start (exit {proc.returncode})\n{self._log_tail(name)}"
            )

    # -- readiness --------------------------------------------------------------------------

    def _wait_ready(self, deadline: float) -> None:
        """Poll `ceph status` until everything is up and HEALTH_OK, or fail at the deadline."""
        unmet = "no answer from the monitor yet"
        while True:
            dead = [name for name, ok in self._alive_pids().items() if not ok]
            if dead:
                raise DevClusterError(
                    f"{', '.join(dead)} died\n" + "\n".join(self._log_tail(n) for n in dead)
                )
            try:
                unmet = _unmet_condition(self._ceph_json("status", timeout=5))
            except DevClusterError as exc:
                unmet = str(exc)
            if unmet is None:
                return
            if time.monotonic() >= deadline:
                raise DevClusterError(
                    f"dev cluster not ready in time: {unmet}\n{self._log_tail('mon.a')}"
                )
            time.sleep(POLL_INTERVAL)

    def _health(self) -> str | None:
        try:
            return self._ceph_json("health", timeout=5)["status"]
        except DevClusterError:
            return None

    # -- daemons ----------------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.directory / "run" / f"{name}.pid"

    def _read_pid(self, name: str) -> int | None:
        try:
            return int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _daemon_pids(self) -> dict[str, int]:
        """Pids from our pid files that still belong to one of our daemons."""
        pids = {}
        for kind, daemon_id in DAEMONS:
            name = f"{kind}.{daemon_id}"
            pid = self._read_pid(name)
            if pid is not None and self._is_our_daemon(pid, kind):
                pids[name] = pid
        return pids

    def _alive_pids(self) -> dict[str, bool]:
        ours = self._daemon_pids()
        return {f"{kind}.{daemon_id}": f"{kind}.{daemon_id}" in ours
                for kind, daemon_id in DAEMONS}

    def _is_our_daemon(self, pid: int, kind: str) -> bool:
        # Pids get reused, e.g. after a reboot: only trust a pid running our binary on our conf.
        # A zombie has an empty cmdline, so it counts as gone.
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return (bool(argv) and os.path.basename(argv[0]) == f"ceph-{kind}".encode()
                and str(self.conf_path).encode() in argv)

    def _stop_daemons(self) -> None:
        pids = self._daemon_pids()
        if not pids:
            return
        kinds = {pid: name.split(".")[0] for name, pid in pids.items()}
        _signal_all(kinds, signal.SIGTERM)
        remaining = self._wait_gone(kinds, time.monotonic() + STOP_GRACE)
        if remaining:
            _signal_all(remaining, signal.SIGKILL)
            remaining = self._wait_gone(remaining, time.monotonic() + STOP_GRACE)
        if remaining:
            raise DevClusterError(f"daemons did not exit: {sorted(remaining)}")

    def _wait_gone(self, kinds: dict[int, str], deadline: float) -> dict[int, str]:
        while True:
            kinds = {pid: kind for pid, kind in kinds.items() if self._is_our_daemon(pid, kind)}
            if not kinds or time.monotonic() >= deadline:
                return kinds
            time.sleep(POLL_INTERVAL / 2)

    def _log_tail(self, name: str) -> str:
        parts = []
        for path in (self.directory / "log" / f"{name}.out", self.directory / "log" / f"{name}.log"):
            try:
                lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            except OSError:
                continue
            if lines:
                parts.append(f"--- {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) or f"(no log for {name})"

    # -- ceph CLI -----------------------------------------------------------------------------

    def _ceph(self, *args: str, timeout: float = CEPH_COMMAND_TIMEOUT) -> str:
        return _run(
            ["ceph", "--conf", str(self.conf_path), "--connect-timeout", str(int(timeout)), *args],
            timeout=timeout + 5,
        )

    def _ceph_json(self, *args: str, timeout: float = CEPH_COMMAND_TIMEOUT) -> Any:
        return json.loads(self._ceph(*args, "--format", "json", timeout=timeout))


def _unmet_condition(status: dict) -> str | None:
    """What still keeps the cluster from being ready, or None once it is."""
    if "a" not in status.get("quorum_names", []):
        return "mon.a not in quorum"
    if not status["mgrmap"].get("available"):
        return "mgr not available"
    osdmap = status["osdmap"]
    if osdmap.get("num_up_osds") != 1 or osdmap.get("num_in_osds") != 1:
        return "osd.0 not up and in"
    pgmap = status["pgmap"]
    states = {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])}
    # The mgr reports PGs a little after pool creation; count them so none is missed.
    if pgmap.get("num_pgs", 0) < PG_NUM * (1 + len(FS_POOLS)) or set(states) != {"active+clean"}:
        return f"PGs not all active+clean: {states or 'none reported'}"
    ranks = status["fsmap"].get("by_rank", [])
    if not any(rank.get("status") == "up:active" for rank in ranks):
        return "mds.a not active"
    health = status["health"]
    if health["status"] != "HEALTH_OK":
        return f"{health['status']}: {', '.join(sorted(health.get('checks', {})))}"
    return None


def _free_ports(count: int) -> list[int]:
    # Hold all sockets open together so the ports differ; the kernel will not hand them out
    # again right away, which makes the window before the mon binds them harmless.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _signal_all(kinds: dict[int, str], sig: signal.Signals) -> None:
    for pid in kinds:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _run(args: list[str], timeout: float = CEPH_COMMAND_TIMEOUT) -> str:
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DevClusterError(f"{' '.join(args)} timed out after {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise DevClusterError(f"{args[0]} not found: are the Ceph packages installed?") from exc
    if proc.returncode != 0:
        raise DevClusterError(
            f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc.stdout
