"""One rados connection per cluster per process, made lazily, reused, and replaced (never shut
down under its other users) when Ceph closed it or it seems to hang.

Connecting costs tens of milliseconds while an RBD create costs a few, so a connection is kept for
the life of the process. It is made after gunicorn forks (a librados handle must never cross a fork).

Every call into the bindings has a deadline. librados bounds each monitor and OSD operation itself
(rados_*_op_timeout), but libcephfs has no per-call timeout for the MDS, a mount can wait on it, and
one librbd call chains several OSD round trips. So each call runs on another thread (one of a few
kept per lane, so a call costs a hand-over, not a new thread) and its caller waits at most the
cluster's timeout (since the call last made progress, for calls that walk a tree or a whole image).
A call past its deadline answers ceph_unavailable and its thread is abandoned inside the binding.
Calls in flight per lane (the monitors, each pool, each file system) are bounded, so a stopped MDS
ties up a few threads, never the RBD calls.

A call that got no answer says little of its handle: the daemon may be stopped (a new handle would
wait on it too) or the call may wait on its own object (a directory whose capabilities a dead client
holds, until the MDS evicts it). So the handle is replaced only when Ceph closed it, or when its lane
answered on it before but not since the call began (the handle itself may hang: a session the MDS
dropped). Later calls then connect anew, and the old handle is shut down only when its last call
returns (shutting a handle down under a call that uses it is what froze a worker's other threads for
good).
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import cephfs
import rados

from robin.ceph.errors import (
    CephNotAuthorized,
    CephNotConnected,
    CephPermissionDenied,
    CephUnavailable,
    translate,
    translated,
)
from robin.metrics import timed_ceph_op

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT_OPTIONS = ("rados_mon_op_timeout", "rados_osd_op_timeout", "client_mount_timeout")
# libcephfs checks POSIX permissions as the process's own uid and gid unless told otherwise: robin running as an
# unprivileged user could not make a directory in a root it does not own. What robin may do in CephFS is what its
# user's MDS caps allow (a path), whichever uid its process has, and what it makes is owned by root.
CEPHFS_IDENTITY = {"client_mount_uid": "0", "client_mount_gid": "0"}
# Calls in flight at once per lane: above a worker's request threads plus a usage refresh's, and
# what a stopped daemon may hold at most until it answers again.
LANE_CALLS = 32
# A lane's thread that has had no call for this long ends: a busy lane keeps its threads.
IDLE_THREAD_S = 60.0
MONITORS = "monitors"
MANAGER = "manager"
# A mgr command may take this many times the connection's timeout (Settings.ceph_timeout).
MGR_TIMEOUT_FACTOR = 6
# Errors by which Ceph says it closed the handle (blocklisted or shut down, not connected).
CLOSED_ERRNOS = (errno.ESHUTDOWN, errno.ENOTCONN)
# Stat-ed by a probe: an OSD that answers "no such object" serves I/O.
PROBE_OBJECT = "robin.probe"
_running = threading.local()  # the call the current thread runs, for progress()


def progress() -> None:
    """Tell the waiting caller that the current call is still getting answers (a tree walk, an image
    scan): its deadline counts from now. Outside a call, nothing."""
    call = getattr(_running, "call", None)
    if call is not None:
        call.progressed_at = time.monotonic()


def progress_reporter() -> Callable[[], None]:
    """progress() for the current call, taken on its thread and run on another: librbd calls a removal's or a
    flatten's progress callback on a thread of its own, where progress() would find no call and extend nothing."""
    call = getattr(_running, "call", None)

    def report() -> None:
        if call is not None:
            call.progressed_at = time.monotonic()

    return report


class CephHandle:
    """One generation of a cluster's connection: a rados handle, the pools and file systems opened
    from it, how many calls use it, and when each lane last got an answer on it."""

    def __init__(self, cluster: rados.Rados, connect_manager: Callable[[], rados.Rados]):
        self.rados = cluster
        self._connect_manager = connect_manager
        self._manager: rados.Rados | None = None
        self.users = 0
        self.retired = False
        self.answered: dict[str, float] = {}  # lane -> time.monotonic() of its last call that got an answer
        self._lock = threading.Lock()
        self._ioctxs: dict[str, rados.Ioctx] = {}
        self._filesystems: dict[str, cephfs.LibCephFS] = {}
        self._mounting: dict[str, threading.Lock] = {}

    def ioctx(self, pool: str) -> rados.Ioctx:
        """A pool's I/O context, shared by threads: librados contexts are thread-safe as long as
        nobody changes their snapshot context or namespace, which robin never does."""
        with self._lock:
            ioctx = self._ioctxs.get(pool)
        if ioctx is None:
            with translated(f"opening pool {pool!r}"):
                ioctx = self.rados.open_ioctx(pool)
            with self._lock:
                ioctx = self._ioctxs.setdefault(pool, ioctx)
        return ioctx

    def filesystem(self, fs_name: str) -> cephfs.LibCephFS:
        """A CephFS client mounted at the file system's root, shared by threads (libcephfs is
        thread-safe) and made from this rados handle, so it reuses its connection. Mounted under a
        lock of the file system's own: a mount waiting on a stopped MDS holds up neither the pools'
        calls nor, by starting more clients, the file system's next calls (they wait for its outcome)."""
        with self._lock:
            fs = self._filesystems.get(fs_name)
            mounting = self._mounting.setdefault(fs_name, threading.Lock())
        if fs is None:
            with mounting:
                with self._lock:
                    fs = self._filesystems.get(fs_name)
                if fs is None:
                    with translated(f"mounting CephFS {fs_name!r}"):
                        fs = cephfs.LibCephFS(rados_inst=self.rados)
                        fs.mount(filesystem_name=fs_name.encode())
                    with self._lock:
                        self._filesystems[fs_name] = fs
        return fs

    def manager(self) -> rados.Rados:
        """A rados handle of its own for mgr commands, made on the first one: librados times a mgr command out
        after rados_mon_op_timeout and aborts the whole process when its answer comes later, so this handle has
        no such timeout (robin's call deadline abandons a slow command instead, its thread waiting for the
        answer)."""
        with self._lock:
            if self._manager is None:
                self._manager = self._connect_manager()
            return self._manager

    def shutdown(self) -> None:
        with self._lock:
            filesystems, self._filesystems, self._ioctxs = list(self._filesystems.values()), {}, {}
            manager, self._manager = self._manager, None
        for fs in filesystems:
            _quietly(fs.shutdown, cephfs.Error)
        if manager is not None:
            _quietly(manager.shutdown, rados.Error)
        _quietly(self.rados.shutdown, rados.Error)


def _quietly(shutdown: Callable[[], None], error: type[Exception]) -> None:
    try:
        shutdown()
    except error:
        pass  # it is being discarded either way


class _Lane:
    """The threads that run one lane's calls: at most LANE_CALLS calls at once, each on a free thread of
    the lane, else on a new one. A thread that hangs in the binding stays with its call, holding its
    slot, until Ceph answers; the next call takes another thread."""

    def __init__(self, name: str):
        self.name = name
        self.slots = threading.BoundedSemaphore(LANE_CALLS)
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []  # the inboxes of the threads waiting for a call

    def start(self, run: Callable[[], None]) -> None:
        """Run `run`, which never raises, on a free thread. The caller holds a slot; the thread
        releases it when `run` returns."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None  # the latest freed: the others may end
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=f"ceph {self.name}", daemon=True).start()
        inbox.put(run)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        run = inbox.get()
        while True:
            run()
            # An idle thread holds nothing of its last call (hence the inbox, not the call, as the thread's
            # argument): a handle no call uses is freed, and so unmounted at exit. A client that vanishes
            # without unmounting keeps its capabilities, blocking other clients on its directories, until
            # the MDS evicts it.
            run = None
            with self._lock:  # free before the slot is: a lane never has more threads than slots
                self._idle.append(inbox)
            self.slots.release()
            try:
                run = inbox.get(timeout=IDLE_THREAD_S)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                run = inbox.get()  # handed a call as the wait ended


class _Call:
    """One binding call on a lane's thread; what it returned or raised, and when it last progressed."""

    def __init__(self, fn: Callable[[CephHandle], T], lane: str, keep_handle: bool):
        self.fn = fn
        self.lane = lane
        self.keep_handle = keep_handle
        # Held until the call returns: its one waiter takes it (a lock hands over faster than an Event).
        self.done = threading.Lock()
        self.done.acquire()
        self.started = self.progressed_at = time.monotonic()
        self.handle: CephHandle | None = None
        self.result = None
        self.error: BaseException | None = None


class CephConnection:
    """`access`: conf_path (a ceph.conf on this host) and/or mon_host + cephx_key, keyring_path,
    client_id, as the cluster registry keeps them."""

    def __init__(self, name: str, access: dict, timeout: float):
        self.name = name
        self.access = access
        self.timeout = timeout
        self._lock = threading.Lock()
        self._handle: CephHandle | None = None
        self._pid = os.getpid()
        self._lanes: dict[str, _Lane] = {}
        self._connecting = threading.Lock()
        self._refused: tuple[float, CephNotConnected] | None = None  # the last failed connect: when, and why

    @property
    def _timeout_s(self) -> int:
        # Ceph takes whole seconds for these options.
        return max(1, math.ceil(self.timeout))

    def _options(self) -> dict[str, str]:
        given = {"mon_host": self.access.get("mon_host"), "key": self.access.get("cephx_key"),
                 "keyring": self.access.get("keyring_path")}
        return {key: value for key, value in given.items() if value}

    def _connect(self, op_timeouts: bool = True) -> rados.Rados:
        """A connected rados handle; without `op_timeouts`, one whose monitor and mgr commands librados never
        times out (CephHandle.manager)."""
        conf_path = self.access.get("conf_path")
        if conf_path and not os.path.exists(conf_path):
            raise CephNotConnected(f"cluster {self.name!r}: ceph.conf {conf_path!r} does not exist",
                                   operation="connect", target=self.name)
        if not conf_path and not self.access.get("mon_host"):
            raise CephNotConnected(f"cluster {self.name!r}: neither a ceph.conf nor monitor addresses are known",
                                   operation="connect", target=self.name)
        try:
            # Without a conf path, read none: the default /etc/ceph one may describe another cluster.
            cluster = rados.Rados(conffile=conf_path or rados.Rados.NO_CONF_FILE,
                                  rados_id=self.access.get("client_id") or "admin", conf=self._options())
            for option in TIMEOUT_OPTIONS:
                cluster.conf_set(option, str(self._timeout_s))
            if not op_timeouts:
                cluster.conf_set("rados_mon_op_timeout", "0")
            for option, value in CEPHFS_IDENTITY.items():
                cluster.conf_set(option, value)
            cluster.connect(timeout=self._timeout_s)
        except rados.Error as exc:
            error = translate(exc, f"connecting to Ceph cluster {self.name!r}")
            # A cluster we cannot connect to is unavailable to the client, unless its monitors refused our user.
            refused = CephNotAuthorized if isinstance(error, CephPermissionDenied) else CephNotConnected
            raise refused(error.message, errno=error.errno, operation="connect", target=self.name) from exc
        return cluster

    def _leave_parent(self) -> None:
        """In a forked child, forget the parent's handle, lanes and connect (never shutting the handle
        down). Called with the lock held."""
        if self._pid != os.getpid():
            self._handle, self._lanes, self._pid = None, {}, os.getpid()
            self._connecting, self._refused = threading.Lock(), None

    def _current(self) -> CephHandle | None:
        with self._lock:
            self._leave_parent()
            handle = self._handle
            if handle is not None:
                handle.users += 1
            return handle

    def _check_out(self) -> CephHandle:
        """The current handle, connecting when there is none. One connect at a time, the other calls
        waiting for its outcome; and after a failed one, none for a timeout: meanwhile calls fail at
        once, so that a cluster that cannot be reached costs one timeout, not one per call (a survey
        or a reconcile round makes many). Connected outside the lock, so that a connect waiting on
        the monitors holds up no call that has a handle."""
        handle = self._current()
        if handle is not None:
            return handle
        with self._connecting:
            handle = self._current()  # made while this call waited for the lock
            if handle is not None:
                return handle
            if self._refused is not None and time.monotonic() - self._refused[0] < self.timeout:
                failed_at, error = self._refused
                raise type(error)(f"{error.message} ({time.monotonic() - failed_at:.0f}s ago; tried again "
                                  f"{self.timeout:g}s after)", errno=error.errno, operation=error.operation,
                                  target=self.name, details=error.details)
            try:
                with timed_ceph_op(self.name, "connect"):
                    fresh = CephHandle(self._connect(), lambda: self._connect(op_timeouts=False))
            except CephNotConnected as exc:
                self._refused = (time.monotonic(), exc)
                raise
            with self._lock:
                self._handle, self._refused = fresh, None
                fresh.users += 1
            return fresh

    def _check_in(self, handle: CephHandle) -> None:
        with self._lock:
            handle.users -= 1
            last = handle.retired and handle.users == 0
        if last:
            handle.shutdown()

    def _retire(self, handle: CephHandle) -> None:
        """Take the handle out of use; shut it down once no call uses it (now, if none does)."""
        with self._lock:
            if self._handle is handle:
                self._handle = None
            unused = not handle.retired and handle.users == 0
            handle.retired = True
        if unused:
            handle.shutdown()

    def _lane(self, lane: str) -> _Lane:
        with self._lock:
            self._leave_parent()
            found = self._lanes.get(lane)
            if found is None:
                found = self._lanes[lane] = _Lane(f"{self.name} {lane}")
            return found

    def call(self, op: str, what: str, fn: Callable[[CephHandle], T], lane: str = MONITORS,
             patient: bool = False, timeout: float | None = None, keep_handle: bool = False,
             slow: bool = False) -> T:
        """fn(handle) on one of the lane's threads, its binding errors translated; ceph_unavailable when
        it has not returned (nor progressed) within the timeout (the connection's, or a shorter one),
        unless `patient` (a call bounded by librados' own operation timeouts, whose length grows
        with the data). `keep_handle`: a call that gets no answer never replaces the handle (a
        probe reports what it finds, it does not act on it). `slow`: a mgr command, allowed MGR_TIMEOUT_FACTOR
        times the timeout."""
        limit = self.timeout * (MGR_TIMEOUT_FACTOR if slow else 1)
        timeout = min(timeout or limit, limit)
        with timed_ceph_op(self.name, op):
            threads = self._lane(lane)
            if not threads.slots.acquire(timeout=timeout):
                raise CephUnavailable(f"{what}: {LANE_CALLS} calls into {lane} of cluster {self.name!r} have been "
                                      f"waiting for Ceph for over {timeout:g}s", operation=op, target=self.name,
                                      details={"lane": lane})
            call = _Call(fn, lane, keep_handle)
            threads.start(lambda: self._run(call, op, what))
            if patient:
                call.done.acquire()
            else:
                while not call.done.acquire(timeout=max(0.0, call.progressed_at + timeout - time.monotonic())):
                    if time.monotonic() >= call.progressed_at + timeout:
                        raise self._abandon(call, op, what, timeout)
            if call.error is not None:
                raise call.error
            return call.result

    def _run(self, call: _Call, op: str, what: str) -> None:
        _running.call = call
        handle = None
        try:
            handle = call.handle = self._check_out()
            with translated(what, operation=op, target=self.name):
                call.result = call.fn(handle)
        except BaseException as exc:  # handed to the caller, which raises it in its own thread
            call.error = exc
        finally:
            if handle is not None:
                self._judge(handle, call)
            call.done.release()  # before a last shutdown, which the caller need not wait for
            _running.call = None
            if handle is not None:
                self._check_in(handle)

    def _abandon(self, call: _Call, op: str, what: str, timeout: float) -> CephUnavailable:
        log.warning("Ceph call abandoned past its deadline", extra={
            "cluster": self.name, "operation": op, "timeout_s": timeout})
        message, details = f"{what}: no answer from Ceph within {timeout:g}s", {"timeout_s": timeout}
        if call.handle is None:  # still connecting: no operation reached the cluster
            return CephNotConnected(message, operation=op, target=self.name, details=details)
        self._suspect(call.handle, call)
        return CephUnavailable(message, operation=op, target=self.name, details=details)

    def _judge(self, handle: CephHandle, call: _Call) -> None:
        """What a call that returned says of its handle."""
        if not isinstance(call.error, CephUnavailable):
            with self._lock:  # an answer, whatever it was (a missing object is one)
                handle.answered[call.lane] = time.monotonic()
        elif call.error.errno in CLOSED_ERRNOS:
            self._retire(handle)  # Ceph closed it: later calls connect anew
        else:
            self._suspect(handle, call)  # librados timed an operation out

    def _suspect(self, handle: CephHandle, call: _Call) -> None:
        """A call got no answer in time: replace its handle only if the lane answered on it before,
        but not since the call began."""
        with self._lock:
            answered = handle.answered.get(call.lane)
        if not call.keep_handle and answered is not None and answered < call.started:
            self._retire(handle)

    def in_pool(self, pool: str, op: str, what: str, fn: Callable[[rados.Ioctx], T], patient: bool = False) -> T:
        return self.call(op, what, lambda handle: fn(handle.ioctx(pool)), lane=f"pool {pool}", patient=patient)

    def in_filesystem(self, fs_name: str, op: str, what: str, fn: Callable[[cephfs.LibCephFS], T]) -> T:
        return self.call(op, what, lambda handle: fn(handle.filesystem(fs_name)), lane=f"file system {fs_name}")

    def mon_command(self, prefix: str, **args) -> dict | list:
        """A monitor command on the main handle, whose op timeout (rados_mon_op_timeout) may end it before the
        monitors answer: unlike a mgr command's, that is harmless. The monitor client cancels the command itself
        (it answers ETIMEDOUT) and drops an answer that comes later ("handle_mon_command_ack <tid> not found"),
        while a mgr command timed out the same way aborted the process once the paused mgr answered ("free():
        invalid pointer", Ceph 16.2.15). tests/integration/test_mon_late_answer.py shows the first on a paused
        monitor. So `fs authorize`, `auth rm` and the other monitor commands need no handle of their own."""
        command = json.dumps({"prefix": prefix, "format": "json", **args})
        what = f"ceph {prefix} on {self.name!r}"
        ret, out, status = self.call("mon_command", what, lambda handle: handle.rados.mon_command(
            command, b"", timeout=self._timeout_s))
        if ret != 0:
            raise translate(rados.OSError(status, errno=-ret), what, operation="mon_command", target=self.name)
        return json.loads(out) if out else {}

    def mgr_command(self, prefix: str, **args) -> str:
        """A command of a mgr module (`fs subvolume ...`: the volumes module); its output as text, JSON or not
        as the command gives it. The module runs one operation at a time and answers slowly on a busy mgr, so
        its calls have a lane and a rados handle of their own (they never hold up the monitors' calls) and
        MGR_TIMEOUT_FACTOR times the connection's timeout. A command past it is abandoned, not retried: it may
        still be carried out, as any Ceph call robin gave up on; its handle is kept (it has no op timeout to
        have fired)."""
        command = json.dumps({"prefix": prefix, "format": "json", **args})
        what = f"ceph {prefix} on {self.name!r}"
        ret, out, status = self.call("mgr_command", what, lambda handle: handle.manager().mgr_command(command, b""),
                                     lane=MANAGER, slow=True, keep_handle=True)
        if ret != 0:
            raise translate(rados.OSError(status, errno=-ret), what, operation="mgr_command", target=self.name)
        return out.decode() if isinstance(out, bytes) else out

    def probe(self, pools: Iterable[str], timeout: float) -> None:
        """Raise CephUnavailable unless the monitors and every pool's OSDs answer within `timeout`:
        one monitor command and, per pool, one stat of an object (a "no such object" is an answer).
        Asking the monitors alone says nothing of a stopped OSD."""
        def ask(handle: CephHandle) -> None:
            ret, _, status = handle.rados.mon_command(json.dumps({"prefix": "health"}), b"", timeout=self._timeout_s)
            if ret != 0:
                raise translate(rados.OSError(status, errno=-ret), f"ceph health on {self.name!r}")
            for pool in pools:
                try:
                    handle.ioctx(pool).stat(PROBE_OBJECT)
                except rados.ObjectNotFound:
                    pass

        self.call("probe", f"probing cluster {self.name!r}", ask, timeout=timeout, keep_handle=True)

    def capacity(self) -> dict:
        """`ceph df`: the cluster's raw total/used/available bytes and, per pool, what is stored, what it
        takes with replication, and what may still be written (max_avail)."""
        df = self.mon_command("df")
        stats = df.get("stats", {})
        pools = [_pool_capacity(pool["name"], pool.get("stats", {})) for pool in df.get("pools", [])]
        return {"total_bytes": stats.get("total_bytes", 0),
                "used_bytes": stats.get("total_used_raw_bytes", stats.get("total_used_bytes", 0)),
                "avail_bytes": stats.get("total_avail_bytes", 0), "pools": pools}

    def credentials(self) -> tuple[str, str]:
        """The cephx user and key of this connection, for the FUSE daemons robin starts on its own host (the data
        gateway): the registry's key, else the one in the keyring robin's ceph.conf names."""
        client_id = self.access.get("client_id") or "admin"
        if self.access.get("cephx_key"):
            return client_id, self.access["cephx_key"]
        key, keyrings = self.call("credentials", f"reading the keyring of {self.name!r}", lambda handle: (
            handle.rados.conf_get("key"), handle.rados.conf_get("keyring")))
        paths = [self.access.get("keyring_path")] + keyrings.split(",")
        key = key or next(filter(None, (_key_in(path.strip(), client_id) for path in paths if path)), None)
        if not key:
            raise CephNotConnected(f"cluster {self.name!r}: no key for client.{client_id} in its keyrings {paths}",
                                   operation="credentials", target=self.name)
        return client_id, key

    def describe(self) -> dict:
        """What the cluster offers robin: its fsid, monitors, pools and CephFS file systems."""
        pools, fsid = self.call("describe", f"describing cluster {self.name!r}", lambda handle: (
            sorted(handle.rados.list_pools()), handle.rados.get_fsid()))
        filesystems = sorted(fs["name"] for fs in self.mon_command("fs ls"))
        monitors = [_client_address(mon) for mon in self.mon_command("mon dump")["mons"]]
        return {"fsid": fsid, "monitors": monitors, "pools": pools, "filesystems": filesystems}

    def close(self) -> None:
        """Stop using the connection: shut down now if no call uses it, else when the last one returns.
        A forked child never shuts down its parent's handle."""
        with self._lock:
            self._leave_parent()
            handle = self._handle
        if handle is not None:
            self._retire(handle)


class CephConnections:
    """The process's connections, keyed by cluster name; rebuilt when a cluster's conf changes."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connections: dict[str, CephConnection] = {}

    def get(self, name: str, access: dict) -> CephConnection:
        with self._lock:
            conn = self._connections.get(name)
            if conn is None or conn.access != access:
                if conn is not None:
                    conn.close()
                conn = self._connections[name] = CephConnection(name, access, self.timeout)
            return conn

    def forget(self, name: str) -> None:
        with self._lock:
            conn = self._connections.pop(name, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()


def _pool_capacity(name: str, stats: dict) -> dict:
    return {"name": name, "stored_bytes": stats.get("stored", stats.get("bytes_used", 0)),
            "used_bytes": stats.get("bytes_used", 0), "max_avail_bytes": stats.get("max_avail", 0),
            "objects": stats.get("objects", 0)}


def _key_in(keyring: str, client_id: str) -> str | None:
    """The key of client.<client_id> in a keyring file (INI-like, with indented `key = ...` lines)."""
    try:
        with open(keyring) as handle:
            text = handle.read()
    except OSError:
        return None
    section = re.search(rf"^\[client\.{re.escape(client_id)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    key = re.search(r"^\s*key\s*=\s*(\S+)", section.group(1), re.M) if section else None
    return key.group(1) if key else None


def _client_address(mon: dict) -> str:
    """A monitor's `ip:port` as clients outside robin take it (Kubernetes' in-tree rbd and cephfs plugins, the
    kernel client): the msgr v1 address, which every client speaks, else the v2 one."""
    addresses = {a["type"]: a["addr"] for a in mon.get("public_addrs", {}).get("addrvec", [])}
    return addresses.get("v1") or addresses.get("v2") or mon["addr"].split("/")[0]
