"""One rados connection per cluster per process, made lazily and reused.

Connecting costs tens of milliseconds while an RBD create costs a few, so a connection is kept
for the life of the process. It is made after gunicorn forks (a librados handle must never
cross a fork) and again after the cluster shut it down.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cephfs
import rados

from robin.ceph.errors import CephNotConnected, CephUnavailable, translate, translated
from robin.metrics import timed_ceph_op

TIMEOUT_OPTIONS = ("rados_mon_op_timeout", "rados_osd_op_timeout", "client_mount_timeout")


class CephConnection:
    """`access`: conf_path (a ceph.conf on this host) and/or mon_host + cephx_key, keyring_path,
    client_id, as the cluster registry keeps them."""

    def __init__(self, name: str, access: dict, timeout: float):
        self.name = name
        self.access = access
        self.timeout = timeout
        self._lock = threading.Lock()
        self._rados: rados.Rados | None = None
        self._pid: int | None = None
        self._ioctxs: dict[str, rados.Ioctx] = {}
        self._filesystems: dict[str, cephfs.LibCephFS] = {}

    @property
    def _timeout_s(self) -> int:
        # Ceph takes whole seconds for these options.
        return max(1, math.ceil(self.timeout))

    def _options(self) -> dict[str, str]:
        given = {"mon_host": self.access.get("mon_host"), "key": self.access.get("cephx_key"),
                 "keyring": self.access.get("keyring_path")}
        return {key: value for key, value in given.items() if value}

    def _connect(self) -> rados.Rados:
        conf_path = self.access.get("conf_path")
        if conf_path and not os.path.exists(conf_path):
            raise CephNotConnected(f"cluster {self.name!r}: ceph.conf {conf_path!r} does not exist")
        if not conf_path and not self.access.get("mon_host"):
            raise CephNotConnected(f"cluster {self.name!r}: neither a ceph.conf nor monitor addresses are known")
        try:
            # Without a conf path, read none: the default /etc/ceph one may describe another cluster.
            cluster = rados.Rados(conffile=conf_path or rados.Rados.NO_CONF_FILE,
                                  rados_id=self.access.get("client_id") or "admin", conf=self._options())
            for option in TIMEOUT_OPTIONS:
                cluster.conf_set(option, str(self._timeout_s))
            cluster.connect(timeout=self._timeout_s)
        except rados.Error as exc:
            error = translate(exc, f"connecting to Ceph cluster {self.name!r}")
            # Whatever the errno, a cluster we cannot connect to is unavailable to the client.
            raise CephNotConnected(error.message, errno=error.errno) from exc
        return cluster

    def rados(self) -> rados.Rados:
        with self._lock:
            if self._rados is None or self._pid != os.getpid():
                self._ioctxs, self._filesystems = {}, {}
                with timed_ceph_op(self.name, "connect"):
                    self._rados = self._connect()
                self._pid = os.getpid()
            return self._rados

    @contextmanager
    def ioctx(self, pool: str) -> Iterator[rados.Ioctx]:
        """A pool's I/O context, shared by threads: librados contexts are thread-safe as long as
        nobody changes their snapshot context or namespace, which robin never does."""
        cluster = self.rados()
        with self._lock:
            ioctx = self._ioctxs.get(pool)
            if ioctx is None:
                with translated(f"opening pool {pool!r} on cluster {self.name!r}"):
                    ioctx = cluster.open_ioctx(pool)
                self._ioctxs[pool] = ioctx
        yield ioctx

    @contextmanager
    def filesystem(self, fs_name: str) -> Iterator[cephfs.LibCephFS]:
        """A CephFS client mounted at the file system's root, shared by threads (libcephfs is
        thread-safe) and made from the cluster's rados handle, so it reuses its connection."""
        cluster = self.rados()
        with self._lock:
            fs = self._filesystems.get(fs_name)
            if fs is None:
                with translated(f"mounting CephFS {fs_name!r} on cluster {self.name!r}"):
                    fs = cephfs.LibCephFS(rados_inst=cluster)
                    fs.mount(filesystem_name=fs_name.encode())
                self._filesystems[fs_name] = fs
        yield fs

    @contextmanager
    def operation(self, op: str, what: str) -> Iterator[None]:
        """Time a binding call and translate its errors; drop the connection if Ceph closed it."""
        try:
            with timed_ceph_op(self.name, op), translated(what):
                yield
        except CephUnavailable:
            self.reset()
            raise

    def mon_command(self, prefix: str, **args) -> dict | list:
        command = json.dumps({"prefix": prefix, "format": "json", **args})
        with self.operation("mon_command", f"ceph {prefix} on {self.name!r}"):
            ret, out, status = self.rados().mon_command(command, b"", timeout=self._timeout_s)
        if ret != 0:
            raise translate(rados.OSError(status, errno=-ret), f"ceph {prefix} on {self.name!r}")
        return json.loads(out) if out else {}

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
        cluster = self.rados()
        key = cluster.conf_get("key")
        paths = [self.access.get("keyring_path")] + cluster.conf_get("keyring").split(",")
        key = key or next(filter(None, (_key_in(path.strip(), client_id) for path in paths if path)), None)
        if not key:
            raise CephNotConnected(f"cluster {self.name!r}: no key for client.{client_id} in its keyrings {paths}")
        return client_id, key

    def describe(self) -> dict:
        """What the cluster offers robin: its fsid, monitors, pools and CephFS file systems."""
        with self.operation("describe", f"describing cluster {self.name!r}"):
            cluster = self.rados()
            pools, fsid = sorted(cluster.list_pools()), cluster.get_fsid()
        filesystems = sorted(fs["name"] for fs in self.mon_command("fs ls"))
        monitors = [_client_address(mon) for mon in self.mon_command("mon dump")["mons"]]
        return {"fsid": fsid, "monitors": monitors, "pools": pools, "filesystems": filesystems}

    def reset(self) -> None:
        with self._lock:
            cluster, self._rados, self._ioctxs = self._rados, None, {}
            filesystems, self._filesystems = list(self._filesystems.values()), {}
            mine = self._pid == os.getpid()
        if not mine:
            return  # a forked child must not shut down its parent's handles
        for fs in filesystems:
            try:
                fs.shutdown()
            except cephfs.Error:
                pass  # it is being discarded either way
        if cluster is not None:
            try:
                cluster.shutdown()
            except rados.Error:
                pass


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
                    conn.reset()
                conn = self._connections[name] = CephConnection(name, access, self.timeout)
            return conn

    def forget(self, name: str) -> None:
        with self._lock:
            conn = self._connections.pop(name, None)
        if conn is not None:
            conn.reset()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.reset()


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
