"""What robin's REST API costs on top of calling the Ceph bindings directly.

One run starts its own dev Ceph cluster (or uses --ceph-conf), a migrated SQLite database and
robin under gunicorn on 127.0.0.1, then times, N times each and interleaved so drift hits every
path equally:

  raw         the bare binding call a script would make (rbd.RBD().create, Image.resize, remove,
              Image.create_snap, trash_move, clone; libcephfs mkdir + the quota xattr);
  robin_ceph  robin's own Ceph layer (robin.ceph.rbd_ops, robin.ceph.cephfs_ops) called in-process:
              the same Ceph work the API does (create also records robin's ownership marker),
              without HTTP or the DB;
  api         the REST call through a keep-alive requests.Session;
  stack       (create, resize and delete) the raw call behind the same server stack: a bare gunicorn app
              (benchmarks/bare_rbd_app.py) with robin serve's worker class, workers, threads and keep-alive,
              making the binding call in its request thread, through the same kind of session. API minus
              stack is robin's own share; stack minus raw the server stack's and the client's;
  api_before  (with --before DIR) the REST call to a second robin served from another checkout, for an A/B
              interleaved in the same run (both servers on the same database and cluster).

The operations: RBD image create, resize and delete (the API's with ?purge=true, a remove like
raw's); CephFS path create (directory + quota); RBD snapshot create; delete to the trash (robin's
default DELETE, against raw trash_move); RBD clone create (format 2, from a snapshot of a parent
image made once per path).

It then lists --list-size images through the API against opening every image with the bindings,
prints Markdown tables and writes JSON with the machine, Ceph version and robin commit.

    .venv/bin/python benchmarks/api_vs_binding.py [--iterations 200] [--list-size 500] [--json out.json]

Everything it starts (cluster daemons, gunicorn) is stopped by pid in `finally`, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `tests.support` importable

import cephfs  # noqa: E402  (after the sys.path line above)
import rados  # noqa: E402
import rbd  # noqa: E402
import requests  # noqa: E402

from robin.ceph import cephfs_ops, rbd_ops  # noqa: E402
from robin.ceph.connection import CephConnection  # noqa: E402
from robin.config import Settings  # noqa: E402
from robin.dev.cluster import DevCluster  # noqa: E402
from tests.support.net import free_port, wait_until  # noqa: E402
from tests.support.server import running_server  # noqa: E402

GiB = 2**30
POOL = "rbd"
# robin serve's worker class (robin/gunicorn_conf.py): the stack path runs behind the same server stack.
STACK_WORKER_CLASS = "robin.gunicorn_worker.ThreadWorker"
CREATE_BYTES = 1 * GiB
RESIZED_BYTES = 2 * GiB
FS_NAME = "cephfs"  # the dev cluster's file system, robin's default
DIR_QUOTA_BYTES = 1 * GiB  # quota of each CephFS path created
QUOTA_XATTR = "ceph.quota.max_bytes"
DIR_MODE = 0o755
SNAPSHOT = "s1"  # every sample snapshots a fresh image, so one name does
# A snapshot needs a new snap id from the mon, i.e. a Paxos commit. The mon proposes at once if
# its last commit is less than paxos_propose_interval old (0.01 s on the dev cluster), else after
# paxos_min_wait (0.05 s): a snapshot issued right after another one is ~45 ms faster than a lone
# one. Back to back, the in-process path (fastest to reach its Ceph call) would ride on the
# previous path's commit in 2 of 3 rotations; spaced out, every path sees the lone-snapshot case.
SNAPSHOT_SPACING_S = 0.05
CLONE_SNAPSHOT = "base"  # the parent snapshot every clone is made from, one parent per path
TRASH_DELAY_S = 24 * 3600  # robin's default ROBIN_TRASH_DELAY; every trashed image is purged at once anyway
WARMUP_CYCLES = 5
HTTP_TIMEOUT_S = 60
BULK_THREADS = 8  # parallel API calls when filling the listing project
OPS = ("create", "resize", "delete")  # RBD images, one cycle per image
# One cycle per CephFS path and per snapshotted image, which is then deleted to the trash.
MORE_OPS = ("cephfs_create", "snap_create", "trash_delete")
CLONE_OPS = ("clone_create",)  # one clone per cycle of one parent snapshot per path
OP_LABELS = {"create": "create", "resize": "resize", "delete": "delete (API: `?purge=true`)",
             "cephfs_create": "CephFS path create", "snap_create": "RBD snapshot create",
             "trash_delete": "delete to trash (API: default `DELETE`)",
             "clone_create": "RBD clone create (from a snapshot)"}
PATHS = ("raw", "robin_ceph", "api")
STACK, BEFORE = "stack", "api_before"  # the optional paths: the bare app's (OPS only), the --before checkout's
# The goals this benchmark checks. The added-ms goal is stated for the RBD create/resize/delete;
# since robin's DELETE moves an image to the trash unless ?purge=true, both deletes are held to it.
# CephFS, snapshot and clone creates are held against the same bar for information only.
GOAL_ADDED_MS = 5.0
GOAL_OPS = frozenset((*OPS, "trash_delete"))
GOAL_LIST_MS, GOAL_LIST_P95_MS = 20.0, 40.0  # issue 17's goal for 500 images


# --- statistics ---------------------------------------------------------------------------------

def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: an actual sample, no interpolation between outliers."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(samples: list[float]) -> dict:
    return {"n": len(samples), "median_ms": statistics.median(samples), "p95_ms": percentile(samples, 95),
            "min_ms": min(samples), "max_ms": max(samples)}


def timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1000, result


# --- the three ways of doing the same thing ----------------------------------------------------

class RawPath:
    """Bare binding calls on one long-lived connection (and one CephFS mount), like robin's
    per-process connection."""

    def __init__(self, ioctx: rados.Ioctx, features: int, fs: cephfs.LibCephFS, fs_dir: str):
        self.ioctx = ioctx
        self.features = features
        self.fs, self.fs_dir = fs, fs_dir  # fs_dir exists (mkdirs once, untimed)
        self.live: set[str] = set()  # for cleanup if the run stops half-way
        self.live_dirs: set[str] = set()
        self.live_snaps: set[tuple[str, str]] = set()
        self.live_clones: set[str] = set()
        self.trashed: set[str] = set()

    def create(self, name: str) -> float:
        elapsed, _ = timed(lambda: rbd.RBD().create(self.ioctx, name, CREATE_BYTES, old_format=False,
                                                    features=self.features))
        self.live.add(name)
        return elapsed

    def resize(self, name: str) -> float:
        def resize():
            with rbd.Image(self.ioctx, name) as image:
                image.resize(RESIZED_BYTES)
        return timed(resize)[0]

    def delete(self, name: str) -> float:
        elapsed, _ = timed(lambda: rbd.RBD().remove(self.ioctx, name))
        self.live.discard(name)
        return elapsed

    def cephfs_create(self, name: str) -> float:
        path = f"{self.fs_dir}/{name}"

        def create():
            self.fs.mkdir(path, DIR_MODE)
            self.fs.setxattr(path, QUOTA_XATTR, str(DIR_QUOTA_BYTES).encode(), 0)
        self.live_dirs.add(path)  # before: a failed setxattr leaves the directory
        return timed(create)[0]

    def cephfs_remove(self, name: str) -> None:
        path = f"{self.fs_dir}/{name}"
        self.fs.rmdir(path)
        self.live_dirs.discard(path)

    def snap_create(self, image: str, snapshot: str) -> float:
        def create():
            with rbd.Image(self.ioctx, image) as handle:
                handle.create_snap(snapshot)
        elapsed = timed(create)[0]
        self.live_snaps.add((image, snapshot))
        return elapsed

    def snap_remove(self, image: str, snapshot: str) -> None:
        with rbd.Image(self.ioctx, image) as handle:
            handle.remove_snap(snapshot)
        self.live_snaps.discard((image, snapshot))

    def trash_delete(self, name: str) -> float:
        elapsed, _ = timed(lambda: rbd.RBD().trash_move(self.ioctx, name, TRASH_DELAY_S))
        self.live.discard(name)
        self.trashed.add(name)
        return elapsed

    def trash_purge(self, name: str) -> None:
        trash_id = trash_id_of(self.ioctx, name)
        if trash_id is not None:
            rbd.RBD().trash_remove(self.ioctx, trash_id, force=True)
        self.trashed.discard(name)

    def clone_create(self, parent: str, snapshot: str, name: str) -> float:
        """Clone format 2 (the dev cluster's default): the snapshot needs no protection."""
        elapsed, _ = timed(lambda: rbd.RBD().clone(self.ioctx, parent, snapshot, self.ioctx, name,
                                                   features=self.features))
        self.live_clones.add(name)
        return elapsed

    def clone_remove(self, name: str) -> None:
        rbd.RBD().remove(self.ioctx, name)
        self.live_clones.discard(name)

    def cleanup(self) -> None:
        for name in list(self.live_clones):  # before their parents' snapshots
            try:
                rbd.RBD().remove(self.ioctx, name)
            except rbd.ImageNotFound:
                pass
            self.live_clones.discard(name)
        for path in list(self.live_dirs):
            try:
                self.fs.rmdir(path)
            except cephfs.ObjectNotFound:
                pass
            self.live_dirs.discard(path)
        for name in list(self.trashed):
            self.trash_purge(name)
        for image, snapshot in list(self.live_snaps):  # snapshots before their images
            try:
                self.snap_remove(image, snapshot)
            except rbd.ImageNotFound:
                self.live_snaps.discard((image, snapshot))
        for name in list(self.live):
            try:
                rbd.RBD().remove(self.ioctx, name)
            except rbd.ImageNotFound:
                pass
            self.live.discard(name)


class RobinCephPath:
    """robin.ceph.rbd_ops and robin.ceph.cephfs_ops in this process: the API's Ceph work exactly,
    minus HTTP, Flask and the DB."""

    def __init__(self, conn: CephConnection, features: tuple[str, ...], fs_dir: str):
        self.conn = conn
        self.features = features
        self.fs_dir = fs_dir  # like robin's <root>/<project>: create_dir makes it if missing
        self.live: set[str] = set()
        self.live_dirs: set[str] = set()
        self.live_snaps: set[tuple[str, str]] = set()
        self.live_clones: set[str] = set()
        self.trashed: dict[str, str | None] = {}  # name -> trash id
        self.owners: dict[str, str] = {}  # name -> the volume id its image is marked with, as robin's rows are
        self.sizes: dict[str, int] = {}  # name -> the size of an image resized from CREATE_BYTES, as robin's rows say

    def create(self, name: str) -> float:
        owner = self.owners[name] = str(uuid.uuid4())
        elapsed, _ = timed(lambda: rbd_ops.create_image(self.conn, POOL, name, CREATE_BYTES, self.features,
                                                        owner=owner, metadata={}))
        self.live.add(name)
        return elapsed

    def resize(self, name: str) -> float:
        self.sizes[name] = RESIZED_BYTES
        return timed(lambda: rbd_ops.resize_image(self.conn, POOL, name, RESIZED_BYTES))[0]

    def delete(self, name: str) -> float:
        # The image was resized before (run_cycle), or is a clone's parent of CREATE_BYTES: robin's rows say which.
        elapsed, _ = timed(lambda: rbd_ops.remove_image(self.conn, POOL, name, self.sizes.get(name, CREATE_BYTES)))
        self.live.discard(name)
        return elapsed

    def cephfs_create(self, name: str) -> float:
        path = f"{self.fs_dir}/{name}"
        self.live_dirs.add(path)
        return timed(lambda: cephfs_ops.create_dir(self.conn, FS_NAME, path, DIR_QUOTA_BYTES,
                                                   owner=str(uuid.uuid4())))[0]

    def cephfs_remove(self, name: str) -> None:
        path = f"{self.fs_dir}/{name}"
        cephfs_ops.remove_tree(self.conn, FS_NAME, path)
        self.live_dirs.discard(path)

    def snap_create(self, image: str, snapshot: str) -> float:
        elapsed = timed(lambda: rbd_ops.create_snapshot(self.conn, POOL, image, snapshot))[0]
        self.live_snaps.add((image, snapshot))
        return elapsed

    def snap_remove(self, image: str, snapshot: str) -> None:
        rbd_ops.remove_snapshot(self.conn, POOL, image, snapshot)  # idempotent
        self.live_snaps.discard((image, snapshot))

    def trash_delete(self, name: str) -> float:
        self.trashed[name] = None  # before: cleanup looks a missing id up in the trash
        elapsed, self.trashed[name] = timed(lambda: rbd_ops.trash_move(self.conn, POOL, name, self.owners[name],
                                                                               TRASH_DELAY_S))
        self.live.discard(name)
        return elapsed

    def trash_purge(self, name: str) -> None:
        trash_id = self.trashed[name] or self.conn.in_pool(POOL, "rbd.trash_list", f"finding {name} in the trash",
                                                           lambda ioctx: trash_id_of(ioctx, name))
        if trash_id is not None:
            # Also forgets robin's marks. Only images of CREATE_BYTES go to the trash (run_more_cycle).
            rbd_ops.trash_purge(self.conn, POOL, trash_id, name, self.owners[name], CREATE_BYTES)
        self.trashed.pop(name)

    def clone_create(self, parent: str, snapshot: str, name: str) -> float:
        elapsed, _ = timed(lambda: rbd_ops.clone(self.conn, POOL, parent, snapshot, name, self.features,
                                                 owner=str(uuid.uuid4()), metadata={}))
        self.live_clones.add(name)
        return elapsed

    def clone_remove(self, name: str) -> None:
        rbd_ops.remove_image(self.conn, POOL, name, CREATE_BYTES)  # idempotent
        self.live_clones.discard(name)

    def cleanup(self) -> None:
        for name in list(self.live_clones):  # before their parents' snapshots
            self.clone_remove(name)
        for path in list(self.live_dirs):
            cephfs_ops.remove_tree(self.conn, FS_NAME, path)  # idempotent
            self.live_dirs.discard(path)
        for name in list(self.trashed):
            self.trash_purge(name)
        for image, snapshot in list(self.live_snaps):
            self.snap_remove(image, snapshot)
        for name in list(self.live):
            rbd_ops.remove_image(self.conn, POOL, name, self.sizes.get(name, CREATE_BYTES))  # idempotent
            self.live.discard(name)


def timed_request(session: requests.Session, method: str, url: str, expected: int, **kwargs) -> float:
    """Milliseconds the request took; RuntimeError unless it answered `expected`."""
    elapsed, response = timed(lambda: session.request(method, url, timeout=HTTP_TIMEOUT_S, **kwargs))
    if response.status_code != expected:
        raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text[:500]}")
    return elapsed


class StackPath:
    """The raw create, resize and delete behind the server stack alone (benchmarks/bare_rbd_app.py), through one
    keep-alive session like ApiPath's."""

    def __init__(self, base_url: str, ioctx: rados.Ioctx):
        self.images_url = f"{base_url}/images"
        self.ioctx = ioctx  # for the cleanup
        self.session = requests.Session()
        self.live: set[str] = set()

    def _call(self, method: str, url: str, expected: int, **kwargs) -> float:
        return timed_request(self.session, method, url, expected, **kwargs)

    def create(self, name: str) -> float:
        self.live.add(name)  # before: a create that fails after Ceph made the image is cleaned up too
        return self._call("POST", self.images_url, 201, json={"name": name, "size_bytes": CREATE_BYTES})

    def resize(self, name: str) -> float:
        return self._call("PATCH", f"{self.images_url}/{name}", 200, json={"size_bytes": RESIZED_BYTES})

    def delete(self, name: str) -> float:
        elapsed = self._call("DELETE", f"{self.images_url}/{name}", 204)
        self.live.discard(name)
        return elapsed

    def cleanup(self) -> None:
        self.session.close()
        for name in list(self.live):
            try:
                rbd.RBD().remove(self.ioctx, name)
            except rbd.ImageNotFound:
                pass
            self.live.discard(name)


class ApiPath:
    """The REST API through one keep-alive session, as a client library would use it."""

    def __init__(self, base_url: str, token: str, project: str, purge_trashed: Callable[[str], None],
                 shared: ApiPath | None = None):
        self.base_url, self.token, self.project = base_url, token, project
        # The API cannot purge what is in its trash before its time (robin's purge loop does):
        # this removes such an image through robin's Ceph layer, for the cleanup.
        self.purge_trashed = purge_trashed
        self.images_url = f"{base_url}/api/v2/projects/{project}/rbd-images"
        self.paths_url = f"{base_url}/api/v2/projects/{project}/cephfs-paths"
        self.session = new_session(token)
        # A twin shares these (set.add/discard are atomic) so cleanup sees every volume.
        self.live: set[str] = set() if shared is None else shared.live
        self.live_dirs: set[str] = set() if shared is None else shared.live_dirs
        self.live_snaps: set[tuple[str, str]] = set() if shared is None else shared.live_snaps
        self.trashed: set[str] = set() if shared is None else shared.trashed
        self.live_clones: set[str] = set() if shared is None else shared.live_clones

    def twin(self) -> ApiPath:
        """The same project through its own session, for another thread (a requests.Session is not
        thread-safe)."""
        return ApiPath(self.base_url, self.token, self.project, self.purge_trashed, shared=self)

    def _call(self, method: str, url: str, expected: int, **kwargs) -> float:
        return timed_request(self.session, method, url, expected, **kwargs)

    def create(self, name: str) -> float:
        elapsed = self._call("POST", self.images_url, 201, json={"name": name, "size_bytes": CREATE_BYTES})
        self.live.add(name)
        return elapsed

    def resize(self, name: str) -> float:
        return self._call("PATCH", f"{self.images_url}/{name}", 200, json={"size_bytes": RESIZED_BYTES})

    def delete(self, name: str) -> float:
        """Removed at once, as raw `RBD().remove` does: without ?purge=true robin moves it to the trash."""
        elapsed = self._call("DELETE", f"{self.images_url}/{name}", 204, params={"purge": "true"})
        self.live.discard(name)
        return elapsed

    def trash_delete(self, name: str) -> float:
        """robin's default DELETE: the image moves to the Ceph trash (restorable for a day)."""
        self.trashed.add(name)
        elapsed = self._call("DELETE", f"{self.images_url}/{name}", 204)
        self.live.discard(name)
        return elapsed

    def trash_purge(self, name: str) -> None:
        self.purge_trashed(name)
        self.trashed.discard(name)

    def cephfs_create(self, name: str) -> float:
        elapsed = self._call("POST", self.paths_url, 201, json={"name": name, "quota_bytes": DIR_QUOTA_BYTES})
        self.live_dirs.add(name)
        return elapsed

    def cephfs_remove(self, name: str) -> None:
        self._call("DELETE", f"{self.paths_url}/{name}", 204, params={"purge": "true"})
        self.live_dirs.discard(name)

    def snap_create(self, image: str, snapshot: str) -> float:
        elapsed = self._call("POST", f"{self.images_url}/{image}/snapshots", 201, json={"name": snapshot})
        self.live_snaps.add((image, snapshot))
        return elapsed

    def snap_remove(self, image: str, snapshot: str) -> None:
        self._call("DELETE", f"{self.images_url}/{image}/snapshots/{snapshot}", 204)
        self.live_snaps.discard((image, snapshot))

    def clone_create(self, parent: str, snapshot: str, name: str) -> float:
        """A clone of a snapshot robin knows: parent and snapshot were made through the API."""
        elapsed = self._call("POST", self.images_url, 201,
                             json={"name": name, "source": {"image": parent, "snapshot": snapshot}})
        self.live_clones.add(name)
        return elapsed

    def clone_remove(self, name: str) -> None:
        self._call("DELETE", f"{self.images_url}/{name}", 204, params={"purge": "true"})
        self.live_clones.discard(name)

    def cleanup(self) -> None:
        for name in list(self.live_clones):  # before their parents' snapshots (and parents)
            self.session.delete(f"{self.images_url}/{name}", params={"purge": "true"}, timeout=HTTP_TIMEOUT_S)
            self.live_clones.discard(name)
        for name in list(self.live_dirs):
            self.session.delete(f"{self.paths_url}/{name}", params={"purge": "true"}, timeout=HTTP_TIMEOUT_S)
            self.live_dirs.discard(name)
        for image, snapshot in list(self.live_snaps):
            self.session.delete(f"{self.images_url}/{image}/snapshots/{snapshot}", timeout=HTTP_TIMEOUT_S)
            self.live_snaps.discard((image, snapshot))
        for name in list(self.live):
            # with_snapshots: an image whose snapshot could not be deleted above goes anyway.
            self.session.delete(f"{self.images_url}/{name}", params={"with_snapshots": "true", "purge": "true"},
                                timeout=HTTP_TIMEOUT_S)
            self.live.discard(name)
        for name in list(self.trashed):
            self.trash_purge(name)


def trash_id_of(ioctx: rados.Ioctx, name: str) -> str | None:
    found = [entry["id"] for entry in rbd.RBD().trash_list(ioctx) if entry["name"] == name]
    return found[-1] if found else None


def purge_from_trash(conn: CephConnection, ioctx: rados.Ioctx, name: str) -> None:
    """Purge an image the API moved to the trash, through robin's own call (it also drops robin's
    owner mark): robin's DB row stays `deleted` with a trash ref, which is fine in a benchmark DB."""
    trash_id = trash_id_of(ioctx, name)
    if trash_id is not None:
        rbd_ops.trash_purge(conn, POOL, trash_id, name, rbd_ops.image_owner(conn, POOL, name) or "", CREATE_BYTES)


def new_session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


# --- per-operation comparison -------------------------------------------------------------------

def run_cycle(paths: dict, stem: str, order: list[str], samples: dict | None) -> None:
    """create, resize and delete one image per path; each op runs on every path before the next op,
    so a slow spell of the cluster lands on all paths, not on one."""
    for op in OPS:
        for path in order:
            elapsed = getattr(paths[path], op)(f"{stem}-{path}")
            if samples is not None:
                samples[op][path].append(elapsed)


def rotation(names: tuple[str, ...], i: int) -> list[str]:
    """The paths in the order of the i-th cycle: who goes first rotates, since the second caller of an op may find
    caches the first one warmed."""
    return list(names[i % len(names):] + names[:i % len(names)])


def cycle_order(names: tuple[str, ...], i: int) -> list[str]:
    """The paths in the order of the i-th timed cycle: a rotation, and with --before each rotation twice in a row,
    the second time with the two servers swapped (ABBA). In a plain rotation each path always came right after the
    same other one (the --before server after the stack path or the API, the API after robin's Ceph layer), and an
    A/A run of one checkout against itself found the --before place ahead on every op."""
    if BEFORE not in names:
        return rotation(names, i)
    order = rotation(names, i // 2)
    if i % 2:
        api, before = order.index("api"), order.index(BEFORE)
        order[api], order[before] = BEFORE, "api"
    return order


def measure_ops(paths: dict, iterations: int, prefix: str) -> tuple[dict, list]:
    """The samples per op and path, and the order of each timed cycle."""
    names = tuple(paths)
    for i in range(WARMUP_CYCLES):  # untimed: first open of the pool, worker's rados connect, TCP setup
        run_cycle(paths, f"{prefix}-warm{i}", list(names), None)
    samples = {op: {path: [] for path in names} for op in OPS}
    orders = [cycle_order(names, i) for i in range(iterations)]
    for i, order in enumerate(orders):
        run_cycle(paths, f"{prefix}-{i}", order, samples)
    return samples, orders


def run_more_cycle(paths: dict, stem: str, order: list[str], samples: dict | None, spacing_s: float) -> None:
    """One CephFS path create and one RBD snapshot create per path, interleaved like run_cycle.
    Each snapshot is of an image made for it just before (untimed), so every sample snapshots an
    image with no snapshots yet; the directories, snapshots and images are removed right after
    (untimed), so nothing piles up from sample to sample: the image by a timed delete to the
    trash (robin's default DELETE), then an untimed purge. Snapshots are spaced by `spacing_s`
    (see SNAPSHOT_SPACING_S): a deliberate gap, not a wait for anything to be ready."""
    images = {path: f"{stem}-sn-{path}" for path in order}
    dirs = {path: f"{stem}-fs-{path}" for path in order}
    for path in order:
        paths[path].create(images[path])

    def snap_create(path: str) -> float:
        time.sleep(spacing_s)
        return paths[path].snap_create(images[path], SNAPSHOT)

    for op, call in (("cephfs_create", lambda path: paths[path].cephfs_create(dirs[path])),
                     ("snap_create", snap_create)):
        for path in order:
            elapsed = call(path)
            if samples is not None:
                samples[op][path].append(elapsed)
    for path in order:
        paths[path].cephfs_remove(dirs[path])
        paths[path].snap_remove(images[path], SNAPSHOT)
    for path in order:
        elapsed = paths[path].trash_delete(images[path])
        if samples is not None:
            samples["trash_delete"][path].append(elapsed)
    for path in order:
        paths[path].trash_purge(images[path])


def measure_more_ops(paths: dict, iterations: int, prefix: str, spacing_s: float) -> tuple[dict, list]:
    names = tuple(paths)
    for i in range(WARMUP_CYCLES):  # untimed: the first CephFS calls of each client, first snapshots
        run_more_cycle(paths, f"{prefix}-mwarm{i}", list(names), None, spacing_s)
    samples = {op: {path: [] for path in names} for op in MORE_OPS}
    orders = [cycle_order(names, i) for i in range(iterations)]
    for i, order in enumerate(orders):
        run_more_cycle(paths, f"{prefix}-m{i}", order, samples, spacing_s)
    return samples, orders


def run_clone_cycle(paths: dict, parents: dict, stem: str, order: list[str], samples: dict | None) -> None:
    """One clone of each path's parent snapshot, interleaved like run_cycle; the clones are then
    removed (untimed), so every sample clones a snapshot with no other clone."""
    clones = {path: f"{stem}-cl-{path}" for path in order}
    for path in order:
        elapsed = paths[path].clone_create(parents[path], CLONE_SNAPSHOT, clones[path])
        if samples is not None:
            samples["clone_create"][path].append(elapsed)
    for path in order:
        paths[path].clone_remove(clones[path])


def measure_clones(paths: dict, iterations: int, prefix: str) -> tuple[dict, list]:
    """Each path gets one parent image with one snapshot, made once on that path (untimed; the
    API's through the API, so robin knows them), then clones it `iterations` times."""
    names = tuple(paths)
    parents = {path: f"{prefix}-parent-{path}" for path in names}
    for path in names:
        paths[path].create(parents[path])
        paths[path].snap_create(parents[path], CLONE_SNAPSHOT)
    for i in range(WARMUP_CYCLES):
        run_clone_cycle(paths, parents, f"{prefix}-cwarm{i}", list(names), None)
    samples = {op: {path: [] for path in names} for op in CLONE_OPS}
    orders = [cycle_order(names, i) for i in range(iterations)]
    for i, order in enumerate(orders):
        run_clone_cycle(paths, parents, f"{prefix}-c{i}", order, samples)
    for path in names:  # the clones are gone: the snapshots, then the parents (API: ?purge=true)
        paths[path].snap_remove(parents[path], CLONE_SNAPSHOT)
        paths[path].delete(parents[path])
    return samples, orders


def warm_all_workers(api: ApiPath, workers: int, prefix: str) -> None:
    """Each gunicorn worker connects to Ceph on its first Ceph call. The timed session sticks to one
    worker, but if its connection is ever re-made it may land on another: warm them all with
    concurrent connections (the kernel spreads accepts across the workers). The first CephFS call
    of a worker mounts the file system: warm that too, and snapshots."""
    def warm(k: int) -> None:
        twin = api.twin()
        try:
            for j in range(2):
                name = f"{prefix}-wk{k}-{j}"
                twin.create(name)
                twin.snap_create(name, SNAPSHOT)
                twin.snap_remove(name, SNAPSHOT)
                twin.delete(name)
                twin.cephfs_create(name)
                twin.cephfs_remove(name)
        finally:
            twin.session.close()

    with ThreadPoolExecutor(max_workers=workers * 2) as pool:
        list(pool.map(warm, range(workers * 2)))


def ops_table_rows(measured: tuple[dict, list]) -> list[dict]:
    samples, orders = measured
    rows = []
    for op in samples:
        stats = {path: summary(series) for path, series in samples[op].items()}
        raw, api = stats["raw"]["median_ms"], stats["api"]["median_ms"]
        row = {"op": op, **stats,
               "api_added_median_ms": api - raw,
               "api_ratio": api / raw,
               "api_added_over_robin_ceph_median_ms": api - stats["robin_ceph"]["median_ms"],
               "goal_applies": op in GOAL_OPS,
               "goal_met": api - raw <= GOAL_ADDED_MS,
               "drift": {path: drift(series) for path, series in samples[op].items()}}
        if STACK in stats:  # the API's added time split: the server stack's share and robin's
            row["stack_added_median_ms"] = stats[STACK]["median_ms"] - raw
            row["robin_added_median_ms"] = api - stats[STACK]["median_ms"]
        if BEFORE in stats:
            row["before_added_median_ms"] = stats[BEFORE]["median_ms"] - raw
            row["by_order"] = by_order(samples[op], orders)
        rows.append(row)
    return rows


def paired(series: dict[str, list[float]]) -> dict:
    """The median of the per-cycle differences before minus API (the two requests of one cycle ran within
    milliseconds of each other, so a slow spell of the machine hits both) and a 95 % confidence interval for it
    from the order statistics (sign test: no assumption on the distribution). An interval holding 0 is no
    difference."""
    differences = sorted(b - a for a, b in zip(series["api"], series[BEFORE], strict=True))
    n = len(differences)
    k = max(0, math.floor((n - 1.96 * math.sqrt(n)) / 2))  # 0-based rank of the lower bound
    return {"n": n, "median_ms": statistics.median(differences),
            "ci95_ms": [differences[k], differences[min(n - 1, n - 1 - k)]]}


def by_order(series: dict[str, list[float]], orders: list[list[str]]) -> dict:
    """The two servers' medians over the cycles where the API went first of the two, and over those where the
    --before server did: the place bias (before minus API, the same in both halves) apart from the order's (the
    difference between the halves). Of one checkout against itself, both should be noise."""
    halves = {"paired": paired(series)}
    for first, second in (("api", BEFORE), (BEFORE, "api")):
        cycles = [i for i, order in enumerate(orders) if order.index(first) < order.index(second)]
        if not cycles:  # --iterations 1
            halves[f"{first}_first"] = None
            continue
        api = statistics.median(series["api"][i] for i in cycles)
        before = statistics.median(series[BEFORE][i] for i in cycles)
        halves[f"{first}_first"] = {"cycles": len(cycles), "api_median_ms": api, "before_median_ms": before,
                                    "before_minus_api_ms": before - api}
    return halves


def half_cell(half: dict | None) -> str:
    return "-" if half is None else signed(half["before_minus_api_ms"])


def drift(series: list[float]) -> dict:
    """Median of the first and last quarter of the run: did a path slow down as it went (deleted
    rows pile up in robin's table), or did the whole machine (then raw moved too)?"""
    quarter = max(1, len(series) // 4)
    return {"first_quarter_median_ms": statistics.median(series[:quarter]),
            "last_quarter_median_ms": statistics.median(series[-quarter:])}


# --- listing ------------------------------------------------------------------------------------

def in_parallel(api: ApiPath, op: str, names: list[str]) -> None:
    """api.<op>(name) for every name from a few client threads: filling 500 images one by one
    would take longer than the rest of the benchmark."""
    local = threading.local()

    def call(name: str) -> None:
        if not hasattr(local, "api"):
            local.api = api.twin()
        getattr(local.api, op)(name)

    with ThreadPoolExecutor(max_workers=BULK_THREADS) as pool:
        list(pool.map(call, names))


def api_list(api: ApiPath) -> Callable[[], dict[str, int]]:
    def call() -> dict[str, int]:
        response = api.session.get(api.images_url, params={"limit": 1000}, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        body = response.json()
        if body["next_cursor"] is not None:
            raise RuntimeError("more than one page: the listing would not be one request")
        return {item["name"]: item["size_bytes"] for item in body["items"]}
    return call


def raw_list_with_sizes(ioctx: rados.Ioctx, names: set[str]) -> Callable[[], dict[str, int]]:
    """What `rbd ls -l` does for the size column: list, then open every image."""
    def call() -> dict[str, int]:
        sizes = {}
        for name in rbd.RBD().list(ioctx):
            if name in names:  # the pool is shared with other projects' images
                with rbd.Image(ioctx, name, read_only=True) as image:
                    sizes[name] = image.size()
        return sizes
    return call


def measure_listing(api: ApiPath, ioctx: rados.Ioctx, names: set[str], repeats: int) -> dict:
    calls = {"api": api_list(api), "raw_ls_l": raw_list_with_sizes(ioctx, names),
             "raw_ls": lambda: rbd.RBD().list(ioctx)}
    expected = {name: CREATE_BYTES for name in names}
    for kind in ("api", "raw_ls_l"):  # warm-up, and a check that both see the same images
        if calls[kind]() != expected:
            raise RuntimeError(f"{kind} listing does not return the {len(names)} images with their sizes")
    kinds = list(calls)
    samples = {kind: [] for kind in kinds}
    for i in range(repeats):
        for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
            if kind == "api":
                # gunicorn closes connections idle for 2 s and the raw listing takes longer:
                # re-open it untimed so the sample is the request, not a TCP handshake.
                api.session.get(f"{api.base_url}/healthz", timeout=HTTP_TIMEOUT_S)
            samples[kind].append(timed(calls[kind])[0])
    return {kind: summary(values) for kind, values in samples.items()}


# --- setup: cluster, database, token, project ----------------------------------------------------

def start_cluster(stack: ExitStack, given_conf: str | None) -> str:
    if given_conf:
        return given_conf
    # Short path: the daemons' admin sockets live under it and unix socket paths are limited.
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
    stack.callback(cluster.down)  # registered before up(): a half-started cluster is stopped too
    return str(cluster.up())


def make_database(stack: ExitStack) -> str:
    from robin.db import upgrade

    directory = tempfile.mkdtemp(prefix="robin-bench-db-")
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    url = f"sqlite:///{directory}/robin.db"
    upgrade(url)
    return url


def make_admin_token(database_url: str, ceph_conf: str) -> str:
    from robin import create_app
    from robin.auth.models import Role
    from robin.auth.service import create_token

    app = create_app(Settings(database_url=database_url, ceph_conf=ceph_conf))
    with app.app_context():
        return create_token(Role.ADMIN, name="benchmark")[0]


def create_project(base_url: str, token: str, name: str) -> None:
    response = new_session(token).post(f"{base_url}/api/v2/projects", timeout=HTTP_TIMEOUT_S, json={
        "name": name, "quota": {"max_bytes": 2**50, "max_volumes": 100_000, "max_snapshots": 100_000}})
    if response.status_code != 201:
        raise RuntimeError(f"creating project {name}: {response.status_code} {response.text[:500]}")


def mount_cephfs(stack: ExitStack, conf: str) -> cephfs.LibCephFS:
    """The raw path's CephFS client: its own mount, made once, like a script's."""
    fs = cephfs.LibCephFS(conffile=conf)
    stack.callback(fs.shutdown)  # registered first: a half-made mount is released too
    fs.mount(filesystem_name=FS_NAME.encode())
    return fs


def remove_empty_dirs(fs: cephfs.LibCephFS, paths: list[str]) -> None:
    """rmdir each, deepest first; one that is not empty (or gone) is left as it is."""
    for path in paths:
        try:
            fs.rmdir(path)
        except (cephfs.ObjectNotFound, cephfs.ObjectNotEmpty) as exc:
            print(f"note: {path} not removed: {exc}", file=sys.stderr)


@contextmanager
def rados_ioctx(conf: str):
    cluster = rados.Rados(conffile=conf)
    cluster.connect(timeout=10)
    try:
        ioctx = cluster.open_ioctx(POOL)
        try:
            yield ioctx
        finally:
            ioctx.close()
    finally:
        cluster.shutdown()


# --- one server configuration -------------------------------------------------------------------

@contextmanager
def bare_rbd_server(conf: str, workers: int, features: int):
    """benchmarks/bare_rbd_app.py under gunicorn with robin serve's worker class, workers, threads and keep-alive
    (gunicorn's default: robin serve passes none); its base URL. Stopped by its pid, its workers with it."""
    directory = Path(tempfile.mkdtemp(prefix="robin-bench-stack-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ROBIN_BENCH_CEPH_CONF": conf, "ROBIN_BENCH_POOL": POOL,
           "ROBIN_BENCH_FEATURES": str(features)}
    with open(directory / "gunicorn.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--worker-class", STACK_WORKER_CLASS,
                                    "--no-control-socket", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                                    "--threads", str(Settings().threads), "benchmarks.bare_rbd_app:app"],
                                   env=env, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: answers(url) or process.poll() is not None, 60, "the bare RBD app")
            if process.poll() is not None:
                raise RuntimeError(f"the bare RBD app exited: {(directory / 'gunicorn.log').read_text()[-2000:]}")
            yield url
        finally:
            stop_process(process)
            shutil.rmtree(directory, ignore_errors=True)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # gunicorn's master stops its workers
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: it and its workers
            process.wait()


def server_env(checkout: Path) -> dict[str, str]:
    """robin serve's environment: robin from `checkout`, and no maintenance loop. The loop's rounds (purge,
    reconcile, usage refresh of the new volumes, in Ceph) run on the one worker, of one of the servers, that holds
    the maintenance lock, between the timed requests: background work, not a request's, and with --before a load
    on one of the two servers only (in one A/A run it was the worker serving the API's timed session)."""
    return {"PYTHONPATH": str(checkout), "ROBIN_MAINTENANCE_INTERVAL": "0"}


def bench_server(args, conf: str, database_url: str, token: str, ioctx, conn, fs, workers: int) -> dict:
    run_id = uuid.uuid4().hex[:6]
    project = f"bench-{run_id}-w{workers}"
    features = Settings().rbd_default_features
    print(f"\n== gunicorn with {workers} worker(s): {args.iterations} iterations ==", flush=True)
    source = source_fingerprint()
    with ExitStack() as servers:
        # PYTHONPATH and the working directory (which `python -m` puts ahead of PYTHONPATH): the server runs the
        # robin next to this script, as the in-process paths do, not whichever checkout the venv's editable install
        # points at, nor the one this script was started from.
        base_url = servers.enter_context(running_server(database_url, conf, workers=workers,
                                                        extra_env=server_env(REPO), cwd=str(REPO)))
        stack_url = servers.enter_context(bare_rbd_server(conf, workers, rbd_ops.feature_mask(features)))
        before_url = None if args.before is None else servers.enter_context(running_server(
            database_url, conf, workers=workers, extra_env=server_env(args.before), cwd=str(args.before.resolve())))
        create_project(base_url, token, project)
        # CephFS parents: the raw one is made once (untimed); robin's layer makes its own on every
        # create, as robin does for <root>/<project>; the API's is <root>/<project>.
        fs_top = f"/bench-{run_id}-w{workers}"
        fs.mkdirs(f"{fs_top}/raw", DIR_MODE)
        purge = partial(purge_from_trash, conn, ioctx)
        paths = {"raw": RawPath(ioctx, rbd_ops.feature_mask(features), fs, f"{fs_top}/raw"),
                 "robin_ceph": RobinCephPath(conn, features, f"{fs_top}/robin_ceph"),
                 "api": ApiPath(base_url, token, project, purge_trashed=purge),
                 STACK: StackPath(stack_url, ioctx)}
        if before_url is not None:
            paths[BEFORE] = ApiPath(before_url, token, project, purge_trashed=purge)
        robin_paths = {name: path for name, path in paths.items() if name != STACK}  # the bare app: OPS only
        more_ops = clone_ops = []
        listing = None
        try:
            for name in ("api", BEFORE):
                if name in paths:
                    warm_all_workers(paths[name], workers, f"b{run_id}{name}")
            ops = ops_table_rows(measure_ops(paths, args.iterations, f"b{run_id}"))
            print(ops_markdown(ops, workers), flush=True)
            if not args.rbd_only:
                more_ops = ops_table_rows(measure_more_ops(robin_paths, args.iterations, f"b{run_id}",
                                                           args.snapshot_spacing))
                print("\n" + ops_markdown(more_ops, workers), flush=True)
                clone_ops = ops_table_rows(measure_clones(robin_paths, args.iterations, f"b{run_id}"))
                print("\n" + ops_markdown(clone_ops, workers), flush=True)
                listing = bench_listing(args, paths["api"], ioctx, f"l{run_id}")
                print("\n" + listing_markdown(listing, args.list_size, workers), flush=True)
        finally:
            for path in paths.values():
                path.cleanup()
            remove_empty_dirs(fs, [f"{fs_top}/raw", f"{fs_top}/robin_ceph", fs_top,
                                   f"{Settings().cephfs_root}/{project}"])
    return {"workers": workers, "threads_per_worker": Settings().threads, "robin_source": source,
            "ops": ops + more_ops + clone_ops, "listing": listing}


def bench_listing(args, api: ApiPath, ioctx, prefix: str) -> dict:
    names = [f"{prefix}-{i:05d}" for i in range(args.list_size)]
    started = time.perf_counter()
    try:
        in_parallel(api, "create", names)
        fill_s = time.perf_counter() - started
        print(f"created {len(names)} images through the API in {fill_s:.1f} s "
              f"({BULK_THREADS} client threads)", flush=True)
        results = measure_listing(api, ioctx, set(names), args.list_repeats)
    finally:
        in_parallel(api, "delete", sorted(api.live))
    return {"images": len(names), "repeats": args.list_repeats, "fill_seconds": fill_s, **results}


# --- reporting ----------------------------------------------------------------------------------

def fmt(value: float) -> str:
    return f"{value:.1f}" if round(abs(value), 2) >= 10 else f"{value:.2f}"


def signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + fmt(abs(value))


def ops_markdown(rows: list[dict], workers: int) -> str:
    """The table of one set of ops; the stack's columns (the added time split) and the --before checkout's when
    the rows have them."""
    stack, before = STACK in rows[0], BEFORE in rows[0]
    header = ("| op | raw median | raw p95 | robin Ceph layer median | robin Ceph layer p95 | API median | API p95 "
              f"| API added (median) | API / raw | goal <= {GOAL_ADDED_MS:g} ms |")
    if stack:
        header += " stack median | of which the stack (stack - raw) | of which robin (API - stack) |"
    if before:
        header += (" before: API median | before: API added | before - API per cycle, median [95 % CI] "
                   "| before - API, API first of the two | before - API, before first |")
    lines = [f"Per operation, gunicorn {workers} worker(s), ms (n={rows[0]['raw']['n']} each):", "", header,
             "|---|" + "---:|" * 8 + "---|" + "---:|" * (3 * stack + 5 * before)]
    for row in rows:
        verdict = "met" if row["goal_met"] else "MISSED"
        if not row["goal_applies"]:
            verdict = f"no goal (would be {verdict.lower()})"
        line = (f"| {OP_LABELS[row['op']]} | {fmt(row['raw']['median_ms'])} | {fmt(row['raw']['p95_ms'])} "
                f"| {fmt(row['robin_ceph']['median_ms'])} | {fmt(row['robin_ceph']['p95_ms'])} "
                f"| {fmt(row['api']['median_ms'])} | {fmt(row['api']['p95_ms'])} "
                f"| {signed(row['api_added_median_ms'])} | {row['api_ratio']:.2f}x | {verdict} |")
        if stack:
            line += (f" {fmt(row[STACK]['median_ms'])} | {signed(row['stack_added_median_ms'])} "
                     f"| {signed(row['robin_added_median_ms'])} |")
        if before:
            halves = row["by_order"]
            pair = halves["paired"]
            line += (f" {fmt(row[BEFORE]['median_ms'])} | {signed(row['before_added_median_ms'])} "
                     f"| {signed(pair['median_ms'])} [{signed(pair['ci95_ms'][0])}, {signed(pair['ci95_ms'][1])}] "
                     f"| {half_cell(halves['api_first'])} | {half_cell(halves[BEFORE + '_first'])} |")
        lines.append(line)
    return "\n".join(lines)


def listing_markdown(listing: dict, size: int, workers: int) -> str:
    labels = {"api": "API `GET .../rbd-images?limit=1000` (sizes from robin's DB)",
              "raw_ls_l": "raw `RBD.list` + open each image + `size()` (`rbd ls -l`)",
              "raw_ls": "raw `RBD.list` only, names (`rbd ls`)"}
    lines = [f"Listing {size} images, gunicorn {workers} worker(s), ms (n={listing['repeats']} each):", "",
             "| how | median | p95 |", "|---|---:|---:|"]
    for kind, label in labels.items():
        lines.append(f"| {label} | {fmt(listing[kind]['median_ms'])} | {fmt(listing[kind]['p95_ms'])} |")
    met = listing["api"]["median_ms"] <= GOAL_LIST_MS and listing["api"]["p95_ms"] <= GOAL_LIST_P95_MS
    lines.append(f"\nGoal: API lists {size} images in at most {GOAL_LIST_MS:g} ms at the median and "
                 f"{GOAL_LIST_P95_MS:g} ms at p95: {'met' if met else 'MISSED'}.")
    return "\n".join(lines)


def command_output(argv: list[str]) -> str:
    try:
        # GIT_OPTIONAL_LOCKS=0: `git status` must not take .git/index.lock from under someone committing.
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


def source_fingerprint() -> str:
    """A hash of robin's code and migrations. Others edit and commit in this tree while a benchmark
    runs, and each gunicorn start loads whatever is on disk then: the hash says which runs ran
    the same code."""
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "robin").rglob("*.py"), *(REPO / "migrations").rglob("*.py")]):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> dict:
    return {"robin_commit": command_output(["git", "rev-parse", "--short", "HEAD"]),
            # Only robin's code counts: this script itself may be newer than the commit.
            "robin_code_dirty": bool(command_output(["git", "status", "--porcelain", "--untracked-files=no",
                                                     "--", "robin", "migrations"])),
            "robin_source": source_fingerprint()}


def before_commit(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, timeout=30).stdout.strip() or "unknown"


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "uname": command_output(["uname", "-a"]),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "ceph_version": command_output(["ceph", "--version"]),
        "python": platform.python_version(),
        "robin_path": str(REPO),
        **git_state(),
    }


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="timed samples per op and path")
    parser.add_argument("--list-size", type=int, default=500, help="images in the listing project")
    parser.add_argument("--list-repeats", type=int, default=20, help="timed listings per way of listing")
    parser.add_argument("--workers", default="4,1",
                        help="gunicorn worker counts to run, comma-separated; the first is the headline "
                             "(4 is robin's default, 1 shows single-request latency)")
    parser.add_argument("--snapshot-spacing", type=float, default=SNAPSHOT_SPACING_S,
                        help="seconds between timed snapshots; keep it above the cluster's "
                             "paxos_propose_interval (0.01 s on the dev cluster, 1 s by default)")
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    parser.add_argument("--before", type=Path,
                        help="a checkout of robin (e.g. `git worktree add /tmp/before REV`) served beside this one "
                             "and timed interleaved with it (path api_before); its migrations must match")
    parser.add_argument("--rbd-only", action="store_true",
                        help="only the RBD create, resize and delete (no CephFS, snapshot, clone or listing)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.snapshot_spacing < 0:
        parser.error("--snapshot-spacing cannot be negative")
    if args.iterations < 1 or args.list_size < 1 or args.list_repeats < 1 or not args.workers:
        parser.error("--iterations, --list-size, --list-repeats and --workers must be positive")
    if args.list_size > 1000:
        parser.error("--list-size above 1000 would need a second page (the API's limit is 1000)")
    return args


def _terminate(signum, _frame):
    # SIGTERM is turned into an exception so the finally blocks stop the cluster and the server.
    raise SystemExit(128 + signum)


def stop_cleanly_on_signals() -> None:
    """SIGTERM and SIGINT end the run through its finally blocks, which stop what it started. A shell starting us
    in the background ignores SIGINT, and Python then keeps it ignored: make `kill -INT` behave like Ctrl-C."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_main(main: Callable[[], int]) -> None:
    """A benchmark's entry point: exit with main()'s status, or 130 after an interrupt (cleaned up by then)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; what this run started has been stopped", file=sys.stderr)
        sys.exit(130)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"iterations": args.iterations, "warmup_cycles": WARMUP_CYCLES,
                           "list_size": args.list_size, "list_repeats": args.list_repeats,
                           "image_bytes": CREATE_BYTES, "resized_bytes": RESIZED_BYTES,
                           "cephfs_fs": FS_NAME, "cephfs_quota_bytes": DIR_QUOTA_BYTES,
                           "snapshot_spacing_s": args.snapshot_spacing,
                           "features": list(Settings().rbd_default_features), "database": "sqlite",
                           "before": None if args.before is None else str(args.before),
                           "before_commit": None if args.before is None else before_commit(args.before),
                           "rbd_only": args.rbd_only},
              "runs": []}
    with ExitStack() as stack:
        conf = start_cluster(stack, args.ceph_conf)
        database_url = make_database(stack)
        token = make_admin_token(database_url, conf)
        ioctx = stack.enter_context(rados_ioctx(conf))
        fs = mount_cephfs(stack, conf)
        conn = CephConnection("bench", {"conf_path": conf, "client_id": "admin"}, Settings().ceph_timeout)
        stack.callback(conn.close)
        for workers in args.workers:
            report["runs"].append(bench_server(args, conf, database_url, token, ioctx, conn, fs, workers))
    report["at_end"] = git_state()
    if report["at_end"] != {key: report["machine"][key] for key in report["at_end"]}:
        print(f"\nWARNING: robin changed during the run ({report['machine']['robin_commit']} -> "
              f"{report['at_end']['robin_commit']}, source {[run['robin_source'] for run in report['runs']]}): "
              "runs may have measured different code", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
