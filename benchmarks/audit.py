"""How long a usage audit (`robin.audit.usage.refresh`) and a drift survey (`robin.audit.drift.find_drift`)
take, and how they grow with the volume count.

One run starts its own dev Ceph cluster (or uses --ceph-conf) and a migrated SQLite database, then,
in-process through robin's service layer (no HTTP: the audit itself never goes through the API, and
creating 4,000 volumes through it would only add minutes of setup), grows one project step by step
to each size in --sizes RBD images *and* as many CephFS paths, writing --data-bytes into one volume
in --data-every of each kind (with the bindings, as a pod would). At each size it times, --repeats
times each and interleaved:

  refresh   usage.refresh(): every live volume measured on a bounded thread pool
            (--parallelism, ROBIN_USAGE_PARALLELISM) on robin's one connection per cluster, figures
            stored in the volume_usage table (the background loop and `?refresh=true` run this);
  raw       the same Ceph calls done serially with no database: per image rbd.Image(read_only) +
            diff_iterate(whole_object=True), per path getxattr("ceph.dir.rbytes"), on one connection;

and for the drift survey (--measure drift), after one full survey has recorded every image's check:

  listing   the baseline: the pool listed with the bindings (list2, trash_list, robin's ownership
            omap), no image opened, no database;
  opens     the same listing plus every image opened read-only for its size and snapshots, serially;
  full      find_drift(full=True): every image opened, as every survey did before ROBIN_DRIFT_OPENS;
  bounded   find_drift(): listing, header signatures, at most ROBIN_DRIFT_OPENS (200) opens; before
            each, --drift-changes images are resized behind robin's back, and both surveys must report
            every resized image as size_mismatch (the run fails otherwise).

Both surveys include the CephFS half (per directory a stat, two xattrs and a .snap listing); the
table splits each survey's Ceph time between RBD and CephFS calls, with its image opens.

It prints a Markdown table, the growth per volume between sizes (linear when the per-volume cost is
flat) and the extrapolation to 10,000 volumes, and writes JSON with the machine and robin's commit.

    .venv/bin/python benchmarks/audit.py [--sizes 500,1000,2000] [--repeats 3] [--measure usage,drift]
                                         [--json out.json]

Everything it starts (cluster daemons) is stopped by pid in `finally`, Ctrl-C and SIGTERM included;
with --ceph-conf the volumes it made are removed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cephfs  # noqa: E402
import rados  # noqa: E402
import rbd  # noqa: E402

from benchmarks.api_vs_binding import (  # noqa: E402
    git_state,
    machine,
    make_database,
    rados_ioctx,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from robin.config import Settings  # noqa: E402

POOL, FS_NAME = "rbd", "cephfs"
IMAGE_BYTES, PATH_QUOTA_BYTES = 1 * 2**30, 1 * 2**30
CREATE_THREADS = 8  # setup only: volumes are created this many at a time


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def raw_audit(ioctx, fs, images: list[str], paths: list[str]) -> int:
    """The bare binding loop: what a script would do, serially, without robin or a database."""
    total = 0

    def count(_offset, length, exists):
        nonlocal total
        total += length if exists else 0
        return 0

    for name in images:
        with rbd.Image(ioctx, name, read_only=True) as image:
            image.diff_iterate(0, image.size(), None, count, whole_object=True)
    for path in paths:
        total += int(fs.getxattr(path, "ceph.dir.rbytes").decode())
    return total


def raw_listing(ioctx) -> int:
    """What the survey cannot do without: the pool's images with their ids, its trash and robin's
    ownership omap, read with the bindings."""
    from robin.ceph.rbd_ops import DIRECTORY_OBJECT

    images = list(rbd.RBD().list2(ioctx))
    rbd.RBD().trash_list(ioctx)
    start = ""
    while True:
        with rados.ReadOpCtx() as op:
            values, _ = ioctx.get_omap_vals(op, start, "", 1000)
            ioctx.operate_read_op(op, DIRECTORY_OBJECT)
            keys = [key for key, _ in values]
        if len(keys) < 1000:
            return len(images)
        start = keys[-1]


def raw_opens(ioctx) -> int:
    """The listing, then every image opened for its size and snapshots: what a survey that opens
    every image cannot go below."""
    raw_listing(ioctx)
    for name in rbd.RBD().list(ioctx):
        with rbd.Image(ioctx, name, read_only=True) as image:
            image.size()
            image.list_snaps()
    return 0


class Fleet:
    """The project's volumes, grown through robin's service layer; data written with the bindings."""

    def __init__(self, app, project: str, ioctx, fs, data_every: int, data_bytes: int):
        from robin.volumes.kinds import KINDS

        self.app, self.project, self.ioctx, self.fs = app, project, ioctx, fs
        self.kinds = {kind.model.__tablename__: kind for kind in KINDS}
        self.data_every, self.data_bytes = data_every, data_bytes
        self.images: list[str] = []
        self.paths: list[str] = []

    def _create(self, table: str, index: int):
        from robin.auth.identity import LOCAL_ADMIN
        from robin.volumes import schemas, service

        name = f"a{index:05d}-{uuid.uuid4().hex[:6]}"
        with self.app.app_context():  # the spec as the API's schema loads it, defaults included
            spec = (schemas.RbdImageCreateSchema().load({"name": name, "size_bytes": IMAGE_BYTES})
                    if table == "rbd_images"
                    else schemas.CephfsPathCreateSchema().load({"name": name, "quota_bytes": PATH_QUOTA_BYTES}))
            volume = service.create(LOCAL_ADMIN, self.kinds[table], self.project, spec)
        if index % self.data_every == 0:
            self._write(table, volume)
        return volume

    def _write(self, table: str, volume) -> None:
        if table == "rbd_images":
            with rbd.Image(self.ioctx, volume.name) as image:
                image.write(b"d" * self.data_bytes, 0)
        else:
            handle = self.fs.open(f"{volume.path}/data", "w", 0o644)
            self.fs.write(handle, b"d" * self.data_bytes, 0)
            self.fs.close(handle)

    def grow_to(self, size: int) -> None:
        with ThreadPoolExecutor(max_workers=CREATE_THREADS) as pool:
            new_images = list(pool.map(lambda i: self._create("rbd_images", i), range(len(self.images), size)))
            new_paths = list(pool.map(lambda i: self._create("cephfs_paths", i), range(len(self.paths), size)))
        self.images += [volume.name for volume in new_images]
        self.paths += [volume.path for volume in new_paths]


def measure_size(app, fleet: Fleet, repeats: int) -> dict:
    from robin.audit import usage

    def refresh():
        with app.app_context():
            result = usage.refresh()
        if result.failed or result.measured != 2 * len(fleet.images):
            raise RuntimeError(f"refresh measured {result.measured}, failed {result.failed[:3]}")

    samples = {"refresh": [], "raw": []}
    for _ in range(repeats):  # interleaved, so a slow spell of the shared machine hits both
        samples["refresh"].append(timed(refresh))
        samples["raw"].append(timed(lambda: raw_audit(fleet.ioctx, fleet.fs, fleet.images, fleet.paths)))
    volumes = 2 * len(fleet.images)
    return {"volumes": volumes, "images": len(fleet.images), "paths": len(fleet.paths),
            **{f"{path}_s": round(statistics.median(values), 3) for path, values in samples.items()},
            "samples": {path: [round(v, 3) for v in values] for path, values in samples.items()}}


def ceph_ops() -> dict[str, tuple[float, float]]:
    """Per Ceph operation robin made in this process: (calls, seconds) so far."""
    from robin.metrics import CEPH_OP_SECONDS

    totals: dict[str, list[float]] = {}
    for metric in CEPH_OP_SECONDS.collect():
        for sample in metric.samples:
            entry = totals.setdefault(sample.labels["operation"], [0.0, 0.0])
            if sample.name.endswith("_count"):
                entry[0] += sample.value
            elif sample.name.endswith("_sum"):
                entry[1] += sample.value
    return {operation: (calls, seconds) for operation, (calls, seconds) in totals.items()}


def ops_between(before: dict, after: dict) -> dict:
    """A survey's Ceph calls: image opens, and calls and seconds of RBD and of CephFS operations."""
    def spent(prefix: str, index: int) -> float:
        return sum(value[index] - before.get(operation, (0.0, 0.0))[index]
                   for operation, value in after.items() if operation.startswith(prefix))

    opens = after.get("rbd.describe", (0.0, 0.0))[0] - before.get("rbd.describe", (0.0, 0.0))[0]
    by_operation = {operation: [int(calls - before.get(operation, (0.0, 0.0))[0]),
                                round(seconds - before.get(operation, (0.0, 0.0))[1], 3)]
                    for operation, (calls, seconds) in after.items()
                    if calls > before.get(operation, (0.0, 0.0))[0]}
    return {"opens": int(opens), "rbd_calls": int(spent("rbd.", 0)), "rbd_s": round(spent("rbd.", 1), 3),
            "cephfs_calls": int(spent("cephfs.", 0)), "cephfs_s": round(spent("cephfs.", 1), 3),
            "by_operation": by_operation}


class DriftRun:
    """The drift surveys of one fleet size, with the images resized behind robin's back so far."""

    def __init__(self, app, fleet: Fleet, changes: int):
        self.app, self.fleet, self.changes = app, fleet, changes
        self.resized: set[str] = set()

    def survey(self, full: bool) -> tuple[float, dict]:
        from robin.audit import drift

        before = ceph_ops()
        start = time.perf_counter()
        with self.app.app_context():
            report = drift.find_drift(full=full)
        elapsed = time.perf_counter() - start
        found = {finding["evidence"]["name"] for finding in report.findings if finding["kind"] == "size_mismatch"}
        if report.errors or found != self.resized:
            raise RuntimeError(f"survey (full={full}) errors {report.errors[:3]}, size_mismatch for "
                               f"{len(found)} images, {len(self.resized)} resized")
        return elapsed, {**ops_between(before, ceph_ops()), **report.budget.coverage()}

    def resize_some(self) -> None:
        """Grow the next few images by 1 MiB with the bindings, as someone bypassing robin would."""
        for name in [name for name in self.fleet.images if name not in self.resized][:self.changes]:
            with rbd.Image(self.fleet.ioctx, name) as image:
                image.resize(image.size() + 2**20)
            self.resized.add(name)


def measure_drift(app, fleet: Fleet, repeats: int, changes: int, run: DriftRun | None) -> tuple[dict, DriftRun]:
    run = run or DriftRun(app, fleet, changes)
    run.survey(full=True)  # every image checked: the steady state of a running robin
    samples = {"listing": [], "opens": [], "full": [], "bounded": []}
    calls = {}
    for _ in range(repeats):  # interleaved, so a slow spell of the shared machine hits each
        samples["listing"].append(timed(lambda: raw_listing(fleet.ioctx)))
        samples["opens"].append(timed(lambda: raw_opens(fleet.ioctx)))
        elapsed, calls["full"] = run.survey(full=True)
        samples["full"].append(elapsed)
        run.resize_some()
        elapsed, calls["bounded"] = run.survey(full=False)
        samples["bounded"].append(elapsed)
    return {"volumes": 2 * len(fleet.images), "images": len(fleet.images), "paths": len(fleet.paths),
            "load": os.getloadavg()[0],
            **{f"{path}_s": round(statistics.median(values), 3) for path, values in samples.items()},
            "samples": {path: [round(v, 3) for v in values] for path, values in samples.items()},
            "last_calls": calls}, run


def drift_markdown(rows: list[dict]) -> str:
    lines = ["| volumes (RBD + CephFS) | load | raw listing | raw listing + every image opened | full survey "
             "(before) | bounded survey (after) | opens full / bounded | RBD Ceph s full / bounded | CephFS calls, "
             "s (bounded) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        full, bounded = row["last_calls"]["full"], row["last_calls"]["bounded"]
        lines.append(f"| {row['images']} + {row['paths']} = {row['volumes']} | {row['load']:.1f} | "
                     f"{1000 * row['listing_s']:.1f} ms | {row['opens_s']:.2f} s | {row['full_s']:.2f} s | "
                     f"{row['bounded_s']:.2f} s | {full['opens']} / {bounded['opens']} | {full['rbd_s']:.2f} / "
                     f"{bounded['rbd_s']:.2f} | {bounded['cephfs_calls']}, {bounded['cephfs_s']:.2f} |")
    return "\n".join(lines)


def growth(rows: list[dict]) -> dict:
    """Per-volume cost at each size and a least-squares line through (volumes, seconds)."""
    xs, ys = [r["volumes"] for r in rows], [r["refresh_s"] for r in rows]
    if len(rows) < 2:
        slope, intercept = ys[0] / xs[0], 0.0
    else:
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs)
        intercept = mean_y - slope * mean_x
    return {"ms_per_volume": [round(1000 * y / x, 3) for x, y in zip(xs, ys, strict=True)],
            "fit_ms_per_volume": round(1000 * slope, 3), "fit_intercept_s": round(intercept, 3),
            "extrapolated_10000_s": round(intercept + slope * 10_000, 1)}


def markdown(rows: list[dict], fit: dict, parallelism: int) -> str:
    lines = [f"| volumes (RBD + CephFS) | robin refresh ({parallelism} threads, to the DB) | raw binding loop "
             "(serial, no DB) | refresh ms/volume |", "|---:|---:|---:|---:|"]
    for row, per in zip(rows, fit["ms_per_volume"], strict=True):
        lines.append(f"| {row['images']} + {row['paths']} = {row['volumes']} | {row['refresh_s']:.2f} s | "
                     f"{row['raw_s']:.2f} s | {per:.2f} |")
    lines.append(f"\nLeast squares: {fit['fit_ms_per_volume']} ms per volume + {fit['fit_intercept_s']} s; "
                 f"10,000 volumes: ~{fit['extrapolated_10000_s']} s.")
    return "\n".join(lines)


def cleanup(app, fleet: Fleet) -> None:
    """With a cluster of someone else's (--ceph-conf): remove what this run made, the trash skipped."""
    from robin.auth.identity import LOCAL_ADMIN
    from robin.volumes import service

    with app.app_context():
        for table, names in (("rbd_images", fleet.images), ("cephfs_paths", fleet.paths)):
            for name in names:
                service.delete(LOCAL_ADMIN, fleet.kinds[table], fleet.project, Path(name).name, purge=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,2000", help="RBD images (and as many CephFS paths) per step")
    parser.add_argument("--repeats", type=int, default=3, help="timed audits per size and path (median shown)")
    parser.add_argument("--parallelism", type=int, default=Settings().usage_parallelism,
                        help="ROBIN_USAGE_PARALLELISM for the refresh")
    parser.add_argument("--data-every", type=int, default=10, help="write data into one volume in this many")
    parser.add_argument("--data-bytes", type=int, default=2**20, help="bytes written into each such volume")
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    parser.add_argument("--measure", default="usage,drift", help="what to time at each size: usage, drift or both")
    parser.add_argument("--drift-changes", type=int, default=20,
                        help="images resized behind robin's back before each bounded drift survey")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.sizes = sorted(int(size) for size in args.sizes.split(",") if size.strip())
    args.measure = {what.strip() for what in args.measure.split(",") if what.strip()}
    if not args.measure or args.measure - {"usage", "drift"}:
        parser.error("--measure takes usage, drift or both")
    if not args.sizes or args.sizes[0] < 1 or args.repeats < 1 or args.data_every < 1:
        parser.error("--sizes, --repeats and --data-every must be positive")
    return args




def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"sizes": args.sizes, "repeats": args.repeats, "parallelism": args.parallelism,
                           "data_every": args.data_every, "data_bytes": args.data_bytes, "database": "sqlite",
                           "measure": sorted(args.measure), "drift_changes": args.drift_changes,
                           "setup": "robin's service layer in-process"}, "rows": [], "drift_rows": []}
    with ExitStack() as stack:
        from robin import create_app
        from robin.auth.identity import LOCAL_ADMIN
        from robin.clusters.service import registry
        from robin.projects import service as projects

        conf = start_cluster(stack, args.ceph_conf)
        settings = Settings(database_url=make_database(stack), ceph_conf=conf, log_level="WARNING",
                            usage_parallelism=args.parallelism, max_volume_bytes=2**50)
        app = create_app(settings)
        stack.callback(registry.connections.close)  # before the cluster goes down (registered earlier)
        ioctx = stack.enter_context(rados_ioctx(conf))
        fs = cephfs.LibCephFS(conffile=conf)
        stack.callback(fs.shutdown)
        fs.mount(filesystem_name=FS_NAME.encode())
        project = f"audit-{uuid.uuid4().hex[:8]}"
        with app.app_context():
            projects.create(LOCAL_ADMIN, project, {"max_bytes": 2**60, "max_volumes": 10**6,
                                                   "max_snapshots": 10**6})
        fleet = Fleet(app, project, ioctx, fs, args.data_every, args.data_bytes)
        if args.ceph_conf:
            stack.callback(cleanup, app, fleet)
        drift_run = None
        for size in args.sizes:
            setup_s = timed(lambda size=size: fleet.grow_to(size))
            print(f"{2 * size} volumes made in {setup_s:.1f} s", flush=True)
            if "usage" in args.measure:
                row = {**measure_size(app, fleet, args.repeats), "setup_s": round(setup_s, 1)}
                report["rows"].append(row)
                print(f"{row['volumes']} volumes: refresh {row['refresh_s']} s, raw {row['raw_s']} s", flush=True)
            if "drift" in args.measure:
                row, drift_run = measure_drift(app, fleet, args.repeats, args.drift_changes, drift_run)
                report["drift_rows"].append(row)
                print(f"{row['volumes']} volumes: drift full {row['full_s']} s, bounded {row['bounded_s']} s, "
                      f"raw listing {row['listing_s']} s, raw opens {row['opens_s']} s", flush=True)
    report["at_end"] = git_state()
    if report["rows"]:
        report["growth"] = growth(report["rows"])
        print("\n" + markdown(report["rows"], report["growth"], args.parallelism))
    if report["drift_rows"]:
        print("\n" + drift_markdown(report["drift_rows"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
