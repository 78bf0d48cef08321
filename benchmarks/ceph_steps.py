"""Every Ceph call robin makes around a write's binding call, each timed on its own.

robin's Ceph layer (robin.ceph.rbd_ops, robin.ceph.cephfs_ops) wraps each write's binding call in
more calls: ownership and trash marks (omap writes on robin's directory object), the in-use check
before a trash move (an image open), the CephFS owner and quota xattrs. This script replays those
sequences on the bindings, one call at a time, and times each call, so that what
`api_vs_binding.py`'s `robin_ceph` column adds over `raw` can be traced to its calls. The ops run
interleaved, one cycle of each op after the other, so that drift hits them alike.

    .venv/bin/python benchmarks/ceph_steps.py [--iterations 40] [--ceph-conf /path/ceph.conf] [--before REV]

With --before REV it then times the ops whose sequence changed (delete `?purge=true`, delete to the trash, CephFS path
create and delete) three ways, interleaved: the raw binding call, robin's Ceph layer as of REV and as in this tree (both
in this process, through a CephConnection, as the API's calls go), in wall time and in the process's CPU time.

Without --ceph-conf it starts a dev cluster and stops it at the end (Ctrl-C and SIGTERM included).
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cephfs  # noqa: E402
import rados  # noqa: E402
import rbd  # noqa: E402

from benchmarks.api_vs_binding import (  # noqa: E402
    CREATE_BYTES,
    DIR_MODE,
    DIR_QUOTA_BYTES,
    FS_NAME,
    POOL,
    mount_cephfs,
    rados_ioctx,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from robin.ceph import cephfs_ops, rbd_ops  # noqa: E402
from robin.ceph.cephfs_ops import OWNER_XATTR, QUOTA_XATTR  # noqa: E402
from robin.ceph.connection import CephConnection  # noqa: E402
from robin.config import Settings  # noqa: E402

WARMUP = 3
TRASH_DELAY_S = 24 * 3600
SNAPSHOT_SPACING_S = 0.05  # as api_vs_binding.py: every snapshot is a lone one for the monitors


class Steps:
    """Times named calls of one op; a cycle's samples count only once the warm-up is over."""

    def __init__(self):
        self.samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.recording = False

    def __call__(self, op: str, step: str, call: Callable[[], object]):
        started = time.perf_counter()
        result = call()
        if self.recording:
            self.samples[op][step].append((time.perf_counter() - started) * 1000)
        return result


def set_keys(ioctx: rados.Ioctx, keys: dict[str, str]) -> None:
    with rados.WriteOpCtx() as op:
        ioctx.set_omap(op, tuple(keys), tuple(value.encode() for value in keys.values()))
        ioctx.operate_write_op(op, rbd_ops.DIRECTORY_OBJECT)


def remove_keys(ioctx: rados.Ioctx, keys: tuple[str, ...]) -> None:
    with rados.WriteOpCtx() as op:
        ioctx.remove_omap_keys(op, keys)
        ioctx.operate_write_op(op, rbd_ops.DIRECTORY_OBJECT)


def read_key(ioctx: rados.Ioctx, key: str) -> dict:
    with rados.ReadOpCtx() as op:
        # The iterator must outlive the operation: the binding's op writes into it.
        values, _ = ioctx.get_omap_vals_by_keys(op, (key,))
        ioctx.operate_read_op(op, rbd_ops.DIRECTORY_OBJECT)
        return dict(values)


def no_progress(_done: int, _total: int) -> int:
    return 0


class Cycle:
    """One cycle of every op, on images and directories named after the cycle."""

    def __init__(self, ioctx: rados.Ioctx, cluster: rados.Rados, fs: cephfs.LibCephFS, fs_dir: str, steps: Steps):
        self.ioctx, self.cluster, self.fs, self.fs_dir, self.time = ioctx, cluster, fs, fs_dir, steps
        self.features = rbd_ops.feature_mask(Settings().rbd_default_features)

    def run(self, stem: str) -> None:
        self.create_and_purge(f"{stem}-p")
        self.snapshot_clone_and_trash(f"{stem}-s")
        self.cephfs_create(f"{stem}-d")

    def create_and_purge(self, name: str) -> None:
        t, ioctx, owner = self.time, self.ioctx, str(uuid.uuid4())
        t("create", "RBD().create (the binding call)", lambda: rbd.RBD().create(
            ioctx, name, CREATE_BYTES, old_format=False, features=self.features))
        t("create", "owner mark: omap set", lambda: set_keys(ioctx, {name: owner}))
        # robin's purge passes a progress callback only for an image that could outlast the deadline (over 1,000
        # objects at a 10 s timeout: rbd_ops.SLOWEST_REMOVALS_PER_S); a 1 GiB one goes without, as the bare row below.
        t("delete ?purge=true", "RBD().remove with a progress callback (the binding call, images over 4,000 MiB)",
          lambda: rbd.RBD().remove(ioctx, name, on_progress=no_progress))
        t("delete ?purge=true", "owner mark: omap remove", lambda: remove_keys(ioctx, (name,)))
        # The same remove without the callback, on an image of its own, for the callback's cost.
        t("delete ?purge=true (bare)", "RBD().create", lambda: rbd.RBD().create(
            ioctx, f"{name}b", CREATE_BYTES, old_format=False, features=self.features))
        t("delete ?purge=true (bare)", "RBD().remove without a callback", lambda: rbd.RBD().remove(ioctx, f"{name}b"))

    def snapshot_clone_and_trash(self, name: str) -> None:
        t, ioctx, owner = self.time, self.ioctx, str(uuid.uuid4())
        rbd.RBD().create(ioctx, name, CREATE_BYTES, old_format=False, features=self.features)
        set_keys(ioctx, {name: owner})
        time.sleep(SNAPSHOT_SPACING_S)
        image = t("snapshot create", "Image() read-write open", lambda: rbd.Image(ioctx, name))
        t("snapshot create", "create_snap (the binding call)", lambda: image.create_snap("s1"))
        t("snapshot create", "close", image.close)
        clone = f"{name}c"
        t("clone create", "RBD().clone (the binding call)", lambda: rbd.RBD().clone(
            ioctx, name, "s1", ioctx, clone, features=self.features))
        t("clone create", "owner mark: omap set", lambda: set_keys(ioctx, {clone: str(uuid.uuid4())}))
        rbd.RBD().remove(ioctx, clone)
        remove_keys(ioctx, (clone,))
        with rbd.Image(ioctx, name) as image:
            image.remove_snap("s1")
        self.trash(name, owner)

    def trash(self, name: str, owner: str) -> None:
        t, ioctx = self.time, self.ioctx
        op = "delete to the trash"
        image = t(op, "in-use check: Image() read-only open", lambda: rbd.Image(ioctx, name, read_only=True))
        image_id = t(op, "in-use check: id()", image.id)
        t(op, "in-use check: list_lockers()", image.list_lockers)
        t(op, "in-use check: watchers_list()", lambda: list(image.watchers_list()))
        t(op, "in-use check: close", image.close)
        t(op, "trash mark: omap set", lambda: set_keys(ioctx, {f"trash/{image_id}": owner}))
        t(op, "RBD().trash_move (the binding call)", lambda: rbd.RBD().trash_move(ioctx, name, TRASH_DELAY_S))
        op = "trash purge (the purge loop)"
        t(op, "RBD().trash_remove with a progress callback", lambda: rbd.RBD().trash_remove(
            ioctx, image_id, force=True, on_progress=no_progress))
        t(op, "trash mark: omap remove", lambda: remove_keys(ioctx, (f"trash/{image_id}",)))
        t(op, "name's owner: omap read", lambda: read_key(ioctx, name))
        t(op, "name's owner: omap remove", lambda: remove_keys(ioctx, (name,)))

    def cephfs_create(self, name: str) -> None:
        t, fs, path, owner = self.time, self.fs, f"{self.fs_dir}/{name}", str(uuid.uuid4()).encode()
        op = "CephFS path create"

        def mkdirs_parent() -> None:
            try:
                fs.mkdirs(self.fs_dir, DIR_MODE)
            except cephfs.ObjectExists:
                pass

        t(op, "mkdirs of the project's directory, which exists (before this round only)", mkdirs_parent)
        t(op, "mkdir (the binding call)", lambda: fs.mkdir(path, DIR_MODE))
        t(op, "owner mark: setxattr user.robin.volume_id", lambda: fs.setxattr(path, OWNER_XATTR, owner, 0))
        t(op, "quota: setxattr ceph.quota.max_bytes (the binding call)",
          lambda: fs.setxattr(path, QUOTA_XATTR, str(DIR_QUOTA_BYTES).encode(), 0))
        # What the sweep of an earlier volume's user costs, when the database names one: an `auth rm` of a
        # user that no longer exists.
        command = json.dumps({"prefix": "auth rm", "entity": f"client.robin-vol-{uuid.uuid4()}"})
        t(op, "earlier user's `auth rm` (only with an earlier volume at the path)",
          lambda: self.cluster.mon_command(command, b""))
        fs.rmdir(path)


# --- robin's layer before and after -----------------------------------------------------------------

LAYERS = ("raw", "before", "after")


def layer_of(rev: str, module: str, directory: Path):
    """robin/ceph/<module>.py as of `rev`, imported under another name (its own imports are this tree's)."""
    path = directory / f"{module}_before.py"
    path.write_text(subprocess.run(["git", "show", f"{rev}:robin/ceph/{module}.py"], cwd=REPO, check=True,
                                   capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location(f"before_{module}", path)
    loaded = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look it up there
    spec.loader.exec_module(loaded)
    return loaded


class Clock:
    """Wall time and the process's CPU time (every thread's, librbd's own included) since it was made, in ms."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return (time.perf_counter() - self.wall) * 1000, (time.process_time() - self.cpu) * 1000


class Layers:
    """The trash delete, the CephFS create and the CephFS delete to the trash, timed raw, through REV's layer and
    through this tree's."""

    def __init__(self, ioctx, fs, conn: CephConnection, before: dict, fs_dir: str):
        self.ioctx, self.fs, self.conn, self.fs_dir = ioctx, fs, conn, fs_dir
        self.modules = {"before": before, "after": {"rbd_ops": rbd_ops, "cephfs_ops": cephfs_ops}}
        self.features = rbd_ops.feature_mask(Settings().rbd_default_features)
        self.samples: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        self.trash_dir = f"{fs_dir}/.trash"  # made once (untimed): the steady state, where robin's exists
        fs.mkdirs(self.trash_dir, 0o700)

    def cycle(self, stem: str, order: tuple[str, ...], record: bool) -> None:
        images = {layer: f"{stem}-{layer}" for layer in order}
        owners = {layer: str(uuid.uuid4()) for layer in order}
        for suffix in ("", "-p"):  # untimed: images marked as robin's, as a volume's is; "-p" ones are removed
            for layer in order:
                rbd.RBD().create(self.ioctx, images[layer] + suffix, CREATE_BYTES, old_format=False,
                                 features=self.features)
                set_keys(self.ioctx, {images[layer] + suffix: owners[layer]})
        for layer in order:
            elapsed = self.remove(layer, images[layer] + "-p")
            if record:
                self.samples["delete ?purge=true"][layer].append(elapsed)
        for layer in order:
            elapsed = self.trash(layer, images[layer], owners[layer])
            if record:
                self.samples["delete to the trash"][layer].append(elapsed)
        for layer in order:
            path = f"{self.fs_dir}/{stem}-{layer}"
            elapsed = self.cephfs_create(layer, path)
            if record:
                self.samples["CephFS path create"][layer].append(elapsed)
        for layer in order:
            path, trash_path = f"{self.fs_dir}/{stem}-{layer}", f"{self.trash_dir}/{stem}-{layer}"
            elapsed = self.cephfs_trash(layer, path, trash_path)
            self.fs.rmdir(trash_path)
            if record:
                self.samples["CephFS path delete to the trash"][layer].append(elapsed)

    def remove(self, layer: str, name: str) -> tuple[float, float]:
        clock = Clock()
        if layer == "raw":
            rbd.RBD().remove(self.ioctx, name)
            elapsed = clock.read()
            remove_keys(self.ioctx, (name,))  # untimed: robin's layer removes its mark itself
            return elapsed
        remove_image = self.modules[layer]["rbd_ops"].remove_image
        # Before this round remove_image took no size (and always asked librbd for progress reports).
        sized = "size_bytes" in inspect.signature(remove_image).parameters
        remove_image(self.conn, POOL, name, *((CREATE_BYTES,) if sized else ()))
        return clock.read()

    def trash(self, layer: str, name: str, owner: str) -> tuple[float, float]:
        clock = Clock()
        if layer == "raw":
            rbd.RBD().trash_move(self.ioctx, name, TRASH_DELAY_S)
        else:
            self.modules[layer]["rbd_ops"].trash_move(self.conn, POOL, name, owner, TRASH_DELAY_S)
        elapsed = clock.read()
        trash_id = next(entry["id"] for entry in rbd.RBD().trash_list(self.ioctx) if entry["name"] == name)
        rbd.RBD().trash_remove(self.ioctx, trash_id, force=True)
        remove_keys(self.ioctx, (name, f"trash/{trash_id}"))
        return elapsed

    def cephfs_trash(self, layer: str, path: str, trash_path: str) -> tuple[float, float]:
        clock = Clock()
        if layer == "raw":
            self.fs.rename(path, trash_path)
        else:
            self.modules[layer]["cephfs_ops"].trash_move(self.conn, FS_NAME, path, trash_path)
        return clock.read()

    def cephfs_create(self, layer: str, path: str) -> tuple[float, float]:
        clock = Clock()
        if layer == "raw":
            self.fs.mkdir(path, DIR_MODE)
            self.fs.setxattr(path, QUOTA_XATTR, str(DIR_QUOTA_BYTES).encode(), 0)
        else:
            self.modules[layer]["cephfs_ops"].create_dir(self.conn, FS_NAME, path, DIR_QUOTA_BYTES,
                                                         owner=str(uuid.uuid4()))
        return clock.read()


def layers_table(samples: dict, rev: str) -> str:
    """Wall time, then the process's CPU time (librbd's threads included), medians in ms: on a loaded machine the
    CPU a call costs varies much less than its wall time."""
    lines = [f"| op | raw median | robin's layer `{rev}` median | robin's layer now median | over raw `{rev}` "
             f"| over raw now | CPU raw / `{rev}` / now | n |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    for op, layers in samples.items():
        raw, before, after = (statistics.median(wall for wall, _ in layers[layer]) for layer in LAYERS)
        cpu = " / ".join(f"{statistics.median(cpu for _, cpu in layers[layer]):.2f}" for layer in LAYERS)
        lines.append(f"| {op} | {raw:.2f} | {before:.2f} | {after:.2f} | {before - raw:+.2f} | {after - raw:+.2f} "
                     f"| {cpu} | {len(layers['raw'])} |")
    return "\n".join(lines)


def remove_if_there(fs: cephfs.LibCephFS, path: str) -> None:
    try:
        fs.rmdir(path)
    except cephfs.ObjectNotFound:
        pass


def table(samples: dict) -> str:
    lines = ["| op | call | median ms | p90 ms | n |", "|---|---|---:|---:|---:|"]
    for op, steps in samples.items():
        for step, values in steps.items():
            ordered = sorted(values)
            p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            lines.append(f"| {op} | {step} | {statistics.median(values):.2f} | {p90:.2f} | {len(values)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    parser.add_argument("--before", metavar="REV", help="also compare robin's layer as of this git revision")
    args = parser.parse_args(argv)
    stop_cleanly_on_signals()
    steps = Steps()
    run = uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        conf = start_cluster(stack, args.ceph_conf)
        ioctx = stack.enter_context(rados_ioctx(conf))
        cluster = rados.Rados(conffile=conf)
        cluster.connect(timeout=10)
        stack.callback(cluster.shutdown)
        fs = mount_cephfs(stack, conf)
        fs_dir = f"/steps-{run}"
        fs.mkdirs(fs_dir, DIR_MODE)
        stack.callback(fs.rmdir, fs_dir)
        cycle = Cycle(ioctx, cluster, fs, fs_dir, steps)
        for i in range(WARMUP + args.iterations):
            steps.recording = i >= WARMUP
            cycle.run(f"steps-{run}-{i}")
        print(table(steps.samples), flush=True)
        if args.before:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ceph-steps-")))
            before = {module: layer_of(args.before, module, directory) for module in ("rbd_ops", "cephfs_ops")}
            conn = CephConnection("steps", {"conf_path": conf, "client_id": "admin"}, Settings().ceph_timeout)
            stack.callback(conn.close)
            layers = Layers(ioctx, fs, conn, before, fs_dir)
            stack.callback(remove_if_there, fs, layers.trash_dir)  # runs before fs_dir's removal: last in, first out
            for i in range(WARMUP + args.iterations):
                order = LAYERS[i % 3:] + LAYERS[:i % 3]  # who goes first rotates
                layers.cycle(f"layers-{run}-{i}", order, record=i >= WARMUP)
            print("\n" + layers_table(layers.samples, args.before))
    return 0


if __name__ == "__main__":
    run_main(main)
