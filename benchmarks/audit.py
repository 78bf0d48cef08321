"""How long a usage audit (`robin.audit.usage.refresh`) takes, and how it grows with the volume count.

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
            diff_iterate(whole_object=True), per path getxattr("ceph.dir.rbytes"), on one connection.

It prints a Markdown table, the growth per volume between sizes (linear when the per-volume cost is
flat) and the extrapolation to 10,000 volumes, and writes JSON with the machine and robin's commit.

    .venv/bin/python benchmarks/audit.py [--sizes 500,1000,2000] [--repeats 3] [--json out.json]

Everything it starts (cluster daemons) is stopped by pid in `finally`, Ctrl-C and SIGTERM included;
with --ceph-conf the volumes it made are removed.
"""
from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.sizes = sorted(int(size) for size in args.sizes.split(",") if size.strip())
    if not args.sizes or args.sizes[0] < 1 or args.repeats < 1 or args.data_every < 1:
        parser.error("--sizes, --repeats and --data-every must be positive")
    return args




def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"sizes": args.sizes, "repeats": args.repeats, "parallelism": args.parallelism,
                           "data_every": args.data_every, "data_bytes": args.data_bytes, "database": "sqlite",
                           "setup": "robin's service layer in-process"}, "rows": []}
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
        for size in args.sizes:
            setup_s = timed(lambda size=size: fleet.grow_to(size))
            row = {**measure_size(app, fleet, args.repeats), "setup_s": round(setup_s, 1)}
            report["rows"].append(row)
            print(f"{row['volumes']} volumes: refresh {row['refresh_s']} s, raw {row['raw_s']} s "
                  f"(setup {row['setup_s']} s)", flush=True)
    report["growth"] = growth(report["rows"])
    report["at_end"] = git_state()
    print("\n" + markdown(report["rows"], report["growth"], args.parallelism))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
