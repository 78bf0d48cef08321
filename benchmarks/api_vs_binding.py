"""What robin's REST API costs on top of calling the Ceph bindings directly.

One run starts its own dev Ceph cluster (or uses --ceph-conf), a migrated SQLite database and
robin under gunicorn on 127.0.0.1, then times, N times each and interleaved so drift hits every
path equally:

  raw      the bare binding call a script would make (rbd.RBD().create, Image.resize, remove);
  rbd_ops  robin's own Ceph layer (robin.ceph.rbd_ops) called in-process: the same Ceph work the
           API does (create also records robin's ownership marker), without HTTP or the DB;
  api      the REST call through a keep-alive requests.Session.

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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `tests.support` importable

import rados  # noqa: E402  (after the sys.path line above)
import rbd  # noqa: E402
import requests  # noqa: E402

from robin.ceph import rbd_ops  # noqa: E402
from robin.ceph.connection import CephConnection  # noqa: E402
from robin.config import Settings  # noqa: E402
from robin.dev.cluster import DevCluster  # noqa: E402
from tests.support.server import running_server  # noqa: E402

GiB = 2**30
POOL = "rbd"
CREATE_BYTES = 1 * GiB
RESIZED_BYTES = 2 * GiB
WARMUP_CYCLES = 5
HTTP_TIMEOUT_S = 60
BULK_THREADS = 8  # parallel API calls when filling the listing project
OPS = ("create", "resize", "delete")
PATHS = ("raw", "rbd_ops", "api")
# The goals this benchmark checks.
GOAL_ADDED_MS = 5.0
GOAL_LIST_MS = 100.0


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
    """Bare binding calls on one long-lived connection, like robin's per-process connection."""

    def __init__(self, ioctx: rados.Ioctx, features: int):
        self.ioctx = ioctx
        self.features = features
        self.live: set[str] = set()  # for cleanup if the run stops half-way

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

    def cleanup(self) -> None:
        for name in list(self.live):
            try:
                rbd.RBD().remove(self.ioctx, name)
            except rbd.ImageNotFound:
                pass
            self.live.discard(name)


class RbdOpsPath:
    """robin.ceph.rbd_ops in this process: the API's Ceph work exactly, minus HTTP, Flask and the DB."""

    def __init__(self, conn: CephConnection, features: tuple[str, ...]):
        self.conn = conn
        self.features = features
        self.live: set[str] = set()

    def create(self, name: str) -> float:
        elapsed, _ = timed(lambda: rbd_ops.create_image(self.conn, POOL, name, CREATE_BYTES, self.features,
                                                        owner=str(uuid.uuid4()), metadata={}))
        self.live.add(name)
        return elapsed

    def resize(self, name: str) -> float:
        return timed(lambda: rbd_ops.resize_image(self.conn, POOL, name, RESIZED_BYTES))[0]

    def delete(self, name: str) -> float:
        elapsed, _ = timed(lambda: rbd_ops.remove_image(self.conn, POOL, name))
        self.live.discard(name)
        return elapsed

    def cleanup(self) -> None:
        for name in list(self.live):
            rbd_ops.remove_image(self.conn, POOL, name)  # idempotent
            self.live.discard(name)


class ApiPath:
    """The REST API through one keep-alive session, as a client library would use it."""

    def __init__(self, base_url: str, token: str, project: str, live: set[str] | None = None):
        self.base_url, self.token, self.project = base_url, token, project
        self.images_url = f"{base_url}/api/v2/projects/{project}/rbd-images"
        self.session = new_session(token)
        self.live: set[str] = set() if live is None else live

    def twin(self) -> ApiPath:
        """The same project through its own session, for another thread (a requests.Session is not
        thread-safe); it shares `live` (set.add/discard are atomic) so cleanup sees every image."""
        return ApiPath(self.base_url, self.token, self.project, live=self.live)

    def _call(self, method: str, url: str, expected: int, **kwargs) -> float:
        elapsed, response = timed(lambda: self.session.request(method, url, timeout=HTTP_TIMEOUT_S, **kwargs))
        if response.status_code != expected:
            raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text[:500]}")
        return elapsed

    def create(self, name: str) -> float:
        elapsed = self._call("POST", self.images_url, 201, json={"name": name, "size_bytes": CREATE_BYTES})
        self.live.add(name)
        return elapsed

    def resize(self, name: str) -> float:
        return self._call("PATCH", f"{self.images_url}/{name}", 200, json={"size_bytes": RESIZED_BYTES})

    def delete(self, name: str) -> float:
        elapsed = self._call("DELETE", f"{self.images_url}/{name}", 204)
        self.live.discard(name)
        return elapsed

    def cleanup(self) -> None:
        for name in list(self.live):
            self.session.delete(f"{self.images_url}/{name}", timeout=HTTP_TIMEOUT_S)
            self.live.discard(name)


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


def measure_ops(paths: dict, iterations: int, prefix: str) -> dict:
    for i in range(WARMUP_CYCLES):  # untimed: first open of the pool, worker's rados connect, TCP setup
        run_cycle(paths, f"{prefix}-warm{i}", list(PATHS), None)
    samples = {op: {path: [] for path in PATHS} for op in OPS}
    for i in range(iterations):
        # Rotate who goes first: the second caller of an op may find caches the first one warmed.
        order = list(PATHS[i % len(PATHS):] + PATHS[:i % len(PATHS)])
        run_cycle(paths, f"{prefix}-{i}", order, samples)
    return samples


def warm_all_workers(api: ApiPath, workers: int, prefix: str) -> None:
    """Each gunicorn worker connects to Ceph on its first Ceph call. The timed session sticks to one
    worker, but if its connection is ever re-made it may land on another: warm them all with
    concurrent connections (the kernel spreads accepts across the workers)."""
    def warm(k: int) -> None:
        twin = api.twin()
        try:
            for j in range(2):
                name = f"{prefix}-wk{k}-{j}"
                twin.create(name)
                twin.delete(name)
        finally:
            twin.session.close()

    with ThreadPoolExecutor(max_workers=workers * 2) as pool:
        list(pool.map(warm, range(workers * 2)))


def ops_table_rows(samples: dict) -> list[dict]:
    rows = []
    for op in OPS:
        stats = {path: summary(samples[op][path]) for path in PATHS}
        raw, api = stats["raw"]["median_ms"], stats["api"]["median_ms"]
        rows.append({"op": op, **{path: stats[path] for path in PATHS},
                     "api_added_median_ms": api - raw,
                     "api_ratio": api / raw,
                     "api_added_over_rbd_ops_median_ms": api - stats["rbd_ops"]["median_ms"],
                     "goal_met": api - raw <= GOAL_ADDED_MS,
                     "drift": {path: drift(samples[op][path]) for path in PATHS}})
    return rows


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
        "name": name, "quota": {"max_bytes": 2**50, "max_volumes": 100_000, "max_snapshots": 0}})
    if response.status_code != 201:
        raise RuntimeError(f"creating project {name}: {response.status_code} {response.text[:500]}")


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

def bench_server(args, conf: str, database_url: str, token: str, ioctx, conn, workers: int) -> dict:
    run_id = uuid.uuid4().hex[:6]
    project = f"bench-{run_id}-w{workers}"
    features = Settings().rbd_default_features
    print(f"\n== gunicorn with {workers} worker(s): {args.iterations} iterations ==", flush=True)
    source = source_fingerprint()
    # PYTHONPATH: the server runs the robin next to this script, as the in-process paths do, not
    # whichever checkout the venv's editable install points at.
    with running_server(database_url, conf, workers=workers, extra_env={"PYTHONPATH": str(REPO)}) as base_url:
        create_project(base_url, token, project)
        paths = {"raw": RawPath(ioctx, rbd_ops.feature_mask(features)), "rbd_ops": RbdOpsPath(conn, features),
                 "api": ApiPath(base_url, token, project)}
        try:
            warm_all_workers(paths["api"], workers, f"b{run_id}")
            ops = ops_table_rows(measure_ops(paths, args.iterations, f"b{run_id}"))
            print(ops_markdown(ops, workers), flush=True)
            listing = bench_listing(args, paths["api"], ioctx, f"l{run_id}")
            print(listing_markdown(listing, args.list_size, workers), flush=True)
        finally:
            for path in paths.values():
                path.cleanup()
    return {"workers": workers, "threads_per_worker": Settings().threads, "robin_source": source,
            "ops": ops, "listing": listing}


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
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def ops_markdown(rows: list[dict], workers: int) -> str:
    lines = [f"Per operation, gunicorn {workers} worker(s), ms (n={rows[0]['raw']['n']} each):", "",
             "| op | raw median | raw p95 | rbd_ops median | rbd_ops p95 | API median | API p95 "
             f"| API added (median) | API / raw | goal <= {GOAL_ADDED_MS:g} ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['op']} | {fmt(row['raw']['median_ms'])} | {fmt(row['raw']['p95_ms'])} "
                     f"| {fmt(row['rbd_ops']['median_ms'])} | {fmt(row['rbd_ops']['p95_ms'])} "
                     f"| {fmt(row['api']['median_ms'])} | {fmt(row['api']['p95_ms'])} "
                     f"| +{fmt(row['api_added_median_ms'])} | {row['api_ratio']:.2f}x "
                     f"| {'met' if row['goal_met'] else 'MISSED'} |")
    return "\n".join(lines)


def listing_markdown(listing: dict, size: int, workers: int) -> str:
    labels = {"api": "API `GET .../rbd-images?limit=1000` (sizes from robin's DB)",
              "raw_ls_l": "raw `RBD.list` + open each image + `size()` (`rbd ls -l`)",
              "raw_ls": "raw `RBD.list` only, names (`rbd ls`)"}
    lines = [f"Listing {size} images, gunicorn {workers} worker(s), ms (n={listing['repeats']} each):", "",
             "| how | median | p95 |", "|---|---:|---:|"]
    for kind, label in labels.items():
        lines.append(f"| {label} | {fmt(listing[kind]['median_ms'])} | {fmt(listing[kind]['p95_ms'])} |")
    met = listing["api"]["median_ms"] < GOAL_LIST_MS
    lines.append(f"\nGoal: API lists {size} images in under {GOAL_LIST_MS:g} ms (median): "
                 f"{'met' if met else 'MISSED'}.")
    return "\n".join(lines)


def command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
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
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.iterations < 1 or args.list_size < 1 or args.list_repeats < 1 or not args.workers:
        parser.error("--iterations, --list-size, --list-repeats and --workers must be positive")
    if args.list_size > 1000:
        parser.error("--list-size above 1000 would need a second page (the API's limit is 1000)")
    return args


def _terminate(signum, _frame):
    # SIGTERM is turned into an exception so the finally blocks stop the cluster and the server.
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # A shell starting us in the background ignores SIGINT, and Python then keeps it ignored:
    # make `kill -INT` behave like Ctrl-C either way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"iterations": args.iterations, "warmup_cycles": WARMUP_CYCLES,
                           "list_size": args.list_size, "list_repeats": args.list_repeats,
                           "image_bytes": CREATE_BYTES, "resized_bytes": RESIZED_BYTES,
                           "features": list(Settings().rbd_default_features), "database": "sqlite"},
              "runs": []}
    with ExitStack() as stack:
        conf = start_cluster(stack, args.ceph_conf)
        database_url = make_database(stack)
        token = make_admin_token(database_url, conf)
        ioctx = stack.enter_context(rados_ioctx(conf))
        conn = CephConnection("bench", conf, "admin", Settings().ceph_timeout)
        stack.callback(conn.reset)
        for workers in args.workers:
            report["runs"].append(bench_server(args, conf, database_url, token, ioctx, conn, workers))
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
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; what this run started has been stopped", file=sys.stderr)
        sys.exit(130)
