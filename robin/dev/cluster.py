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

# (type, id) in start order; "type.id" names the pid and log files.
DAEMONS = (("mon", "a"), ("mgr", "x"), ("osd", "0"), ("mds", "a"))
# Started without forking: a daemon that forks reopens its stderr read-only (on /dev/null), and the mgr's volumes
# module writes to stderr in `fs subvolume authorize` (Ceph 16), which then fails with EBADF.
FOREGROUND = ("mgr",)
# Stopped in this order: with the mon gone first, the OSD and MDS wait 5 s for its shutdown ack.
STOP_ORDER = (("mds", "osd", "mgr"), ("mon",))
FS_NAME = "cephfs"
RBD_POOL = "rbd"
FS_POOLS = ("cephfs_metadata", "cephfs_data")
PG_NUM = 8
DEAD_CLIENT_TIMEOUT_S = 30  # the least Ceph accepts
# Thin: memstore only allocates what is written, this is just the size the OSD reports.
MEMSTORE_BYTES = 16 << 30
# Every mgr module is imported at start (~0.3 s each). Skip those robin has no use for; the
# always-on ones (balancer, crash, devicehealth, orchestrator, pg_autoscaler, progress,
# rbd_support, status, telemetry, volumes) must load or the cluster goes HEALTH_ERR.
MGR_DISABLED_MODULES = (
    "alerts diskprediction_local influx insights localpool mirroring nfs osd_perf_query "
    "osd_support prometheus restful selftest snap_schedule stats telegraf test_orchestrator zabbix"
)
# Everything _create() puts in the directory: down() deletes nothing else.
OUR_ENTRIES = {"ceph.conf", "keyring", "monmap", "run", "log", "crash", "mon", "mgr", "osd", "mds"}
# Clients that are daemons (ceph-fuse) put "ceph-client.admin.<pid>.<cctid>.asok" in the run dir
# and sun_path holds 107 bytes.
MAX_DIR_LENGTH = 60

CEPH_COMMAND_TIMEOUT = 30.0  # one admin command; the mon answers in milliseconds when healthy
STATUS_TIMEOUT = 5.0  # one poll of `ceph status`/`ceph health`
DAEMON_START_TIMEOUT = 30.0  # the launcher returns once the forked daemon is initialised
STOP_GRACE = 10.0  # SIGTERM -> SIGKILL
POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 30

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
mon host = {mon_addrs}
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
# Clones without protected snapshots; needs the mimic min compat client set below.
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
# A dev box with a fairly full disk must not turn the cluster HEALTH_WARN (default 30 %).
mon data avail warn = 10
mon osd initial require min compat client = mimic
# Read by the mon when it creates the mgr map; restful (a default) wants a certificate.
mgr initial modules = iostat

[mgr]
mgr data = {dir}/mgr/$id
pid file = {dir}/run/$name.pid
mgr disabled modules = {mgr_disabled_modules}
# Beacon and PG stats every second, so that readiness shows up sooner.
mgr tick period = 1
mgr stats period = 1

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
        # Absolute: the pid guard looks for the conf path in the daemons' command lines.
        self.directory = Path(self.directory).expanduser().absolute()

    @property
    def conf_path(self) -> Path:
        return self.directory / "ceph.conf"

    @property
    def keyring_path(self) -> Path:
        return self.directory / "keyring"

    # -- public API -------------------------------------------------------------------------

    def up(self, timeout: float = 90.0) -> Path:
        """Make sure a healthy cluster runs in the directory and return its ceph.conf.

        `timeout` bounds the wait for readiness; each command has its own shorter timeout.
        """
        deadline = time.monotonic() + timeout
        if all(self._liveness().values()):
            self._wait_ready(deadline)
            return self.conf_path
        # Some daemon is gone (crash, reboot): memstore data went with it, start over.
        self.down()
        try:
            self._create(deadline)
        except BaseException:
            # Keep the directory: its logs explain the failure; the next up() wipes it.
            self._stop_daemons()
            raise
        return self.conf_path

    def down(self) -> None:
        """Stop our daemons (and nothing else) and delete the directory."""
        if not self.directory.exists():
            return
        self._check_ours()
        self._stop_daemons()
        shutil.rmtree(self.directory)

    def status(self) -> dict:
        liveness = self._liveness()
        running = all(liveness.values())
        health = self._health() if running else None
        return {
            "directory": str(self.directory),
            "conf": str(self.conf_path),
            "running": running,
            "healthy": health == "HEALTH_OK",
            "daemons": {
                name: {"pid": self._read_pid(name), "alive": alive}
                for name, alive in liveness.items()
            },
            "health": health,
        }

    def is_healthy(self) -> bool:
        return all(self._liveness().values()) and self._health() == "HEALTH_OK"

    # -- creation ---------------------------------------------------------------------------

    def _create(self, deadline: float) -> None:
        if len(str(self.directory)) > MAX_DIR_LENGTH:
            raise DevClusterError(
                f"{self.directory} is too long for the daemons' unix sockets "
                f"(at most {MAX_DIR_LENGTH} characters)"
            )
        fsid, mon_addrs = self._write_conf()
        self._create_keyring()
        self._create_mon(fsid, mon_addrs)
        self._start_daemon("mon", "a")
        self._disable_device_monitoring()
        # The mgr takes seconds to load its modules: start it early, then keep busy.
        self._start_daemon("mgr", "x")
        self._create_osd_and_pools()
        self._start_daemon("osd", "0")
        self._set_up_rbd_and_fs()
        self._start_daemon("mds", "a")
        self._wait_ready(deadline)

    def _write_conf(self) -> tuple[str, str]:
        for sub in ("run", "log", "crash", "mon/a", "mgr/x", "osd/0", "mds/a"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        v2_port, v1_port = _free_ports(2)
        mon_addrs = f"[v2:127.0.0.1:{v2_port},v1:127.0.0.1:{v1_port}]"
        self.conf_path.write_text(CONF_TEMPLATE.format(
            fsid=fsid, mon_addrs=mon_addrs, dir=self.directory, pg_num=PG_NUM,
            memstore_bytes=MEMSTORE_BYTES, mgr_disabled_modules=MGR_DISABLED_MODULES,
        ))
        return fsid, mon_addrs

    def _create_keyring(self) -> None:
        for i, (entity, caps) in enumerate(KEYS.items()):
            args = ["ceph-authtool", str(self.keyring_path), "--gen-key", "-n", entity]
            if i == 0:
                args.append("--create-keyring")
            for service, cap in caps.items():
                args += ["--cap", service, cap]
            _run(args)
        self.keyring_path.chmod(0o600)

    def _create_mon(self, fsid: str, mon_addrs: str) -> None:
        monmap = self.directory / "monmap"
        _run(["monmaptool", "--create", "--fsid", fsid, "--enable-all-features",
              "--addv", "a", mon_addrs, str(monmap)])
        # mkfs imports every key of the keyring, caps included, into the auth database.
        _run(["ceph-mon", "-c", str(self.conf_path), "--mkfs", "-i", "a",
              "--monmap", str(monmap), "--keyring", str(self.keyring_path)])
        monmap.unlink()

    def _disable_device_monitoring(self) -> None:
        # It would add a pool of its own at some point after the OSD boots. Module options only
        # come from the mon's config database, not from ceph.conf, and the mon only knows them
        # once a mgr has run, hence --force; set before the mgr starts so it never sees "on".
        self._ceph("config", "set", "mgr", "mgr/devicehealth/enable_monitoring", "false",
                   "--force")

    def _create_osd_and_pools(self) -> None:
        osd_uuid = str(uuid.uuid4())
        # Every `ceph` call costs ~0.4 s of CLI start-up: run the independent ones together.
        self._ceph_all(
            ("osd", "new", osd_uuid, "0"),
            *(("osd", "pool", "create", pool, str(PG_NUM), str(PG_NUM))
              for pool in (RBD_POOL, *FS_POOLS)),
        )
        _run(["ceph-osd", "-c", str(self.conf_path), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])

    def _set_up_rbd_and_fs(self) -> None:
        self._ceph_all(
            ("osd", "pool", "application", "enable", RBD_POOL, "rbd"),  # = `rbd pool init`
            ("fs", "new", FS_NAME, *FS_POOLS),
        )
        # A single MDS has no standby; without this the fs stays HEALTH_WARN. A client that died
        # holding capabilities blocks others for session_timeout (60 s by default): tests kill
        # robin workers on purpose, so a dev cluster gives up on dead clients sooner.
        self._ceph_all(("fs", "set", FS_NAME, "standby_count_wanted", "0"),
                       ("fs", "set", FS_NAME, "session_timeout", str(DEAD_CLIENT_TIMEOUT_S)))

    def _start_daemon(self, kind: str, daemon_id: str) -> None:
        name = f"{kind}.{daemon_id}"
        if kind in FOREGROUND:
            self._start_in_foreground(kind, daemon_id)
            return
        with open(self.directory / "log" / f"{name}.out", "ab") as out:
            # The launcher forks the daemon and exits once it is initialised; a new session
            # keeps a Ctrl-C aimed at our caller away from the daemon.
            try:
                proc = subprocess.run(
                    [f"ceph-{kind}", "-c", str(self.conf_path), "-i", daemon_id],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, timeout=DAEMON_START_TIMEOUT, check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise DevClusterError(f"{name} did not start\n{self._log_tail(name)}") from exc
        if proc.returncode != 0:
            raise DevClusterError(
                f"{name} failed to start (exit {proc.returncode})\n{self._log_tail(name)}"
            )

    def _start_in_foreground(self, kind: str, daemon_id: str) -> None:
        """Start the daemon without forking (`-f`), detached from our session, its output to its .out log, and
        return once it wrote its pid file (as the forking launcher returns once the daemon is initialised)."""
        name = f"{kind}.{daemon_id}"
        with open(self.directory / "log" / f"{name}.out", "ab") as out:
            proc = subprocess.Popen([f"ceph-{kind}", "-f", "-c", str(self.conf_path), "-i", daemon_id],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while self._running_pid(kind, daemon_id) != proc.pid:
            if proc.poll() is not None:
                raise DevClusterError(f"{name} failed to start (exit {proc.returncode})\n{self._log_tail(name)}")
            if time.monotonic() >= deadline:
                raise DevClusterError(f"{name} did not start\n{self._log_tail(name)}")
            time.sleep(POLL_INTERVAL)

    # -- readiness --------------------------------------------------------------------------

    def _wait_ready(self, deadline: float) -> None:
        """Poll `ceph status` until everything is up and HEALTH_OK, or fail at the deadline."""
        while True:
            dead = [name for name, alive in self._liveness().items() if not alive]
            if dead:
                tails = "\n".join(self._log_tail(name) for name in dead)
                raise DevClusterError(f"{', '.join(dead)} died\n{tails}")
            try:
                unmet = _unmet_condition(self._ceph_json("status", timeout=STATUS_TIMEOUT))
            except DevClusterError as exc:
                unmet = ("mon.a", str(exc))
            if unmet is None:
                return
            if time.monotonic() >= deadline:
                culprit, what = unmet
                raise DevClusterError(
                    f"dev cluster not ready in time: {what}\n{self._log_tail(culprit)}"
                )
            time.sleep(POLL_INTERVAL)

    def _health(self) -> str | None:
        try:
            return self._ceph_json("health", timeout=STATUS_TIMEOUT)["status"]
        except DevClusterError:
            return None

    # -- daemons ----------------------------------------------------------------------------

    def _read_pid(self, name: str) -> int | None:
        try:
            return int((self.directory / "run" / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def _running_pid(self, kind: str, daemon_id: str) -> int | None:
        pid = self._read_pid(f"{kind}.{daemon_id}")
        return pid if pid is not None and self._is_our_daemon(pid, kind) else None

    def _liveness(self) -> dict[str, bool]:
        return {f"{kind}.{daemon_id}": self._running_pid(kind, daemon_id) is not None
                for kind, daemon_id in DAEMONS}

    def _our_pids(self, kinds: tuple[str, ...]) -> dict[int, str]:
        """{pid: kind} of our running daemons of these kinds: those of the pid files, and any other process running
        a daemon of ours on our conf (an MDS that respawned into a new pid outlived its cluster's teardown)."""
        pids = {}
        for kind, daemon_id in DAEMONS:
            pid = self._running_pid(kind, daemon_id) if kind in kinds else None
            if pid is not None:
                pids[pid] = kind
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in pids:
                kind = next((kind for kind in kinds if self._is_our_daemon(int(entry), kind)), None)
                if kind is not None:
                    pids[int(entry)] = kind
        return pids

    def _is_our_daemon(self, pid: int, kind: str) -> bool:
        # Pids get reused, e.g. after a reboot: only trust a pid running our binary on our conf.
        # A zombie has an empty command line, so it counts as gone.
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return (os.path.basename(argv[0]) == f"ceph-{kind}".encode()
                and str(self.conf_path).encode() in argv)

    def _stop_daemons(self) -> None:
        for kinds in STOP_ORDER:
            pids = self._our_pids(kinds)
            _signal_all(pids, signal.SIGTERM)
            pids = self._wait_gone(pids, time.monotonic() + STOP_GRACE)
            _signal_all(pids, signal.SIGKILL)
            pids = self._wait_gone(pids, time.monotonic() + STOP_GRACE)
            if pids:
                raise DevClusterError(f"daemons did not exit: pids {sorted(pids)}")

    def _wait_gone(self, pids: dict[int, str], deadline: float) -> dict[int, str]:
        """Wait until these daemons exit; return those still running at the deadline."""
        while True:
            pids = {pid: kind for pid, kind in pids.items() if self._is_our_daemon(pid, kind)}
            if not pids or time.monotonic() >= deadline:
                return pids
            time.sleep(POLL_INTERVAL / 4)

    def _check_ours(self) -> None:
        """Refuse to delete a directory we did not fill (say DevCluster(Path.home()))."""
        foreign = sorted(set(os.listdir(self.directory)) - OUR_ENTRIES)
        if foreign:
            raise DevClusterError(
                f"{self.directory} holds more than a dev cluster ({', '.join(foreign[:5])}): "
                "not deleting it"
            )

    def _log_tail(self, name: str) -> str:
        parts = []
        for path in (self.directory / "log" / f"{name}.out",
                     self.directory / "log" / f"{name}.log"):
            try:
                lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            except OSError:
                continue
            if lines:
                parts.append(f"--- {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) or f"(no log for {name})"

    # -- ceph CLI ---------------------------------------------------------------------------

    def _ceph(self, *args: str, timeout: float = CEPH_COMMAND_TIMEOUT) -> str:
        return self._ceph_all(args, timeout=timeout)[0]

    def _ceph_all(self, *commands: tuple[str, ...],
                  timeout: float = CEPH_COMMAND_TIMEOUT) -> list[str]:
        """Run admin commands concurrently; return their outputs."""
        base = ["ceph", "--conf", str(self.conf_path), "--connect-timeout", str(int(timeout))]
        # The CLI's own start-up comes on top of the connect timeout.
        return _run_all([[*base, *args] for args in commands], timeout=timeout + 5)

    def _ceph_json(self, *args: str, timeout: float = CEPH_COMMAND_TIMEOUT) -> Any:
        return json.loads(self._ceph(*args, "--format", "json", timeout=timeout))


def _unmet_condition(status: dict) -> tuple[str, str] | None:
    """(daemon whose log should tell why, what is missing) until the cluster is ready."""
    if "a" not in status.get("quorum_names", []):
        return "mon.a", "mon.a not in quorum"
    if not status["mgrmap"].get("available"):
        return "mgr.x", "mgr.x not available"
    osdmap = status["osdmap"]
    if osdmap.get("num_up_osds") != 1 or osdmap.get("num_in_osds") != 1:
        return "osd.0", "osd.0 not up and in"
    pgmap = status["pgmap"]
    states = {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])}
    # The mgr learns of new pools a little late: count the PGs so that none is missed.
    if pgmap.get("num_pgs", 0) < PG_NUM * (1 + len(FS_POOLS)) or set(states) != {"active+clean"}:
        return "osd.0", f"PGs not all active+clean: {states or 'none reported yet'}"
    if not any(rank.get("status") == "up:active" for rank in status["fsmap"].get("by_rank", [])):
        return "mds.a", "mds.a not active"
    health = status["health"]
    if health["status"] != "HEALTH_OK":
        return "mon.a", f"{health['status']}: {', '.join(sorted(health.get('checks', {})))}"
    return None


def _free_ports(count: int) -> list[int]:
    # Held open together so that they differ. Another process could take one before the mon
    # binds it, but the kernel picks these at random from a large range: unlikely enough here.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _signal_all(pids: dict[int, str], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _run(args: list[str], timeout: float = CEPH_COMMAND_TIMEOUT) -> str:
    return _run_all([args], timeout)[0]


def _run_all(commands: list[list[str]], timeout: float) -> list[str]:
    """Run commands concurrently, all within `timeout`; raise if any of them fails."""
    deadline = time.monotonic() + timeout
    procs = []
    try:
        for args in commands:
            procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outputs, errors = [], []
        for args, proc in zip(commands, procs, strict=True):
            try:
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err = f"timed out after {timeout:.0f}s"
            if proc.returncode != 0:
                errors.append(f"{' '.join(args)} failed (exit {proc.returncode}): {err.strip()}")
            outputs.append(out)
    except FileNotFoundError as exc:
        raise DevClusterError(f"{exc.filename} not found: is Ceph installed?") from exc
    finally:
        for proc in procs:  # only on an early exit: the others are reaped already
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if errors:
        raise DevClusterError("\n".join(errors))
    return outputs
