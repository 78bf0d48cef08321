"""robin's own CPU per write request, in process, the Ceph calls stubbed out: what is left is robin's Python and its
SQL (authentication, the hooks, the arguments' load, the reservation transaction with its audit row, the second
commit, the answer, the access log line and the metrics), through Flask's test client.

For each write path (RBD create, RBD resize to twice the size, CephFS path create) it runs --iterations requests
after 20 of warm-up and prints, per request (medians): the thread's CPU time, the wall time, the SQL statements
(BEGIN counted on SQLite, where it is a statement; psycopg sends its BEGIN and COMMIT itself, and a pipeline's
statements do not pass SQLAlchemy) and the thread CPU and wall time of the service's two transactions (the
reservation, or a resize's first commit, and `set_state`, the second commit). As under `robin serve`, the metrics
are written to a multiprocess directory and every request writes its JSON access log line (to /dev/null). The
database is a fresh SQLite file, or the PostgreSQL database --db-url names (behind
`python -m tests.support.pg_proxy URL --delay-ms 0.25`: PostgreSQL on "another host").

    .venv/bin/python benchmarks/write_cpu.py [--iterations 200] [--db-url URL] [--cprofile rbd_create] \
        [--sort tottime|cumulative] [--before CHECKOUT --rounds 5]

--cprofile OP profiles 100 more requests of OP and prints its hottest functions and the calls per request.
--before CHECKOUT runs this script --rounds times on each checkout, alternating (before, this one, before, ...),
each run in a process of its own with the checkout first on its path, and prints the medians of the runs' medians.
Nothing but the SQLite file (and the metrics directory) in a temporary directory is made; no server, no Ceph.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# From this script's own directory (the first entry of the path of a script), not `benchmarks.in_process`: a run
# of another checkout (--before) has that checkout first on its path, whose benchmarks may lack it or differ.
from in_process import profiled, robin_app

WARMUP = 20
PROFILED_REQUESTS = 100
OPS = ("rbd_create", "rbd_resize", "cephfs_create")
PIECES = ("reserve_new", "_begin_resize", "set_state")
RESULT = re.compile(r"(\w+): cpu ([\d.]+) ms, wall ([\d.]+) ms")
SECOND_COMMIT = re.compile(r"(\w+): .*set_state ([\d.]+) ms \(wall ([\d.]+) ms\)")


def stub_ceph_and_time_pieces(pieces: dict[str, float]) -> dict:
    """The Ceph calls of these paths do nothing; the service's transactions add their thread CPU to `pieces`. Returns
    the service's functions as they were, to profile without the timing."""
    from robin.volumes import kinds, service

    for module, name in ((kinds.rbd_ops, "create_image"), (kinds.rbd_ops, "resize_image"),
                         (kinds.cephfs_ops, "create_dir"), (kinds.cephfs_ops, "set_quota")):
        setattr(module, name, lambda *args, **kwargs: None)
    service.ceph_connection = lambda volume: None
    originals = {name: getattr(service, name) for name in PIECES if hasattr(service, name)}
    for name, function in originals.items():  # called by their global names: wrapping the module's attribute times them
        setattr(service, name, _timed(name, function, pieces))
    return originals


def _timed(name: str, function, pieces: dict[str, float]):
    def timed(*args, **kwargs):
        started, wall = time.thread_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            pieces[name] = pieces.get(name, 0.0) + time.thread_time() - started
            pieces[f"{name} wall"] = pieces.get(f"{name} wall", 0.0) + time.perf_counter() - wall
    return timed


def measure(args, scratch: str) -> None:
    from sqlalchemy import event

    pieces: dict[str, float] = {}
    untimed = stub_ceph_and_time_pieces(pieces)
    from robin import log as robin_log
    from robin.db import db
    from robin.volumes import service

    conf = Path(scratch) / "ceph.conf"  # named, never read: the Ceph calls are stubbed
    conf.write_text("[global]\n")
    try:
        with robin_app(args.db_url or f"sqlite:///{scratch}/robin.db", str(conf), "write-cpu") as writes:
            robin_log.configure("INFO", "json")  # robin serve's access log line, written where nobody reads it
            logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
            statements: list[str] = []
            event.listen(db.engine, "before_cursor_execute", lambda *event_args: statements.append(event_args[2]))
            for op in OPS:
                for _ in range(WARMUP):
                    writes.prepare(op)()
            samples = defaultdict(list)
            for _ in range(args.iterations):  # interleaved: a busy spell of the machine hits every path
                for op in OPS:
                    request = writes.prepare(op)
                    statements.clear()
                    pieces.clear()
                    cpu, wall = time.thread_time(), time.perf_counter()
                    request()
                    samples[op].append((time.thread_time() - cpu, time.perf_counter() - wall, len(statements),
                                        dict(pieces)))
            report(samples)
            if args.cprofile:
                for name, function in untimed.items():
                    setattr(service, name, function)
                print(profiled(writes.prepare, args.cprofile, PROFILED_REQUESTS, args.sort, args.lines))
    finally:
        db.dispose()


def report(samples: dict[str, list]) -> None:
    """Per op, the medians of the thread CPU, the wall time and each timed piece; the statements of the last."""
    for op in OPS:
        rows = samples[op]
        medians = {name: [statistics.median(row[3].get(key, 0.0) for row in rows) * 1000
                          for key in (name, f"{name} wall")] for name in PIECES if name in rows[-1][3]}
        print(f"{op}: cpu {statistics.median(row[0] for row in rows) * 1000:.3f} ms, "
              f"wall {statistics.median(row[1] for row in rows) * 1000:.3f} ms, statements {rows[-1][2]}; "
              + ", ".join(f"{name} {cpu:.3f} ms (wall {wall:.3f} ms)" for name, (cpu, wall) in medians.items()),
              flush=True)


def alternate(args) -> None:
    """This script on --before and on this checkout in turn, --rounds times each; medians of the runs' medians."""
    runs, second_commits = defaultdict(list), defaultdict(list)
    checkouts = (("before", args.before.resolve()), ("after", Path(__file__).resolve().parent.parent))
    for _ in range(args.rounds):
        for label, checkout in checkouts:
            command = [sys.executable, __file__, "--iterations", str(args.iterations)]
            if args.db_url:
                command += ["--db-url", args.db_url]
            environment = {**os.environ, "PYTHONPATH": str(checkout)}
            output = subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout
            for match in RESULT.finditer(output):
                runs[(match.group(1), label)].append((float(match.group(2)), float(match.group(3))))
            for match in SECOND_COMMIT.finditer(output):
                second_commits[(match.group(1), label)].append((float(match.group(2)), float(match.group(3))))
    print(f"load average after the runs: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print("| request | before: CPU ms (runs) | after: CPU ms (runs) | before / after wall ms "
          "| second commit (set_state) before / after: CPU ms, wall ms |")
    print("|---|---|---|---|---|")
    for op in OPS:
        before, after = runs[(op, "before")], runs[(op, "after")]
        commits = [second_commits[(op, label)] for label in ("before", "after")]
        print(f"| {op} | {_median_and_runs(before)} | {_median_and_runs(after)} | "
              f"{statistics.median(run[1] for run in before):.2f} / {statistics.median(run[1] for run in after):.2f} | "
              + " / ".join(_cpu_and_wall(runs) for runs in commits) + " |")


def _cpu_and_wall(runs: list[tuple[float, float]]) -> str:
    return f"{statistics.median(run[0] for run in runs):.3f}, {statistics.median(run[1] for run in runs):.3f}"


def _median_and_runs(runs: list[tuple[float, float]]) -> str:
    return (f"**{statistics.median(run[0] for run in runs):.2f}** "
            f"({', '.join(f'{run[0]:.2f}' for run in runs)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--db-url", help="a PostgreSQL database to use (it is migrated); default: a fresh SQLite file")
    parser.add_argument("--cprofile", choices=OPS, help="also profile this request with cProfile")
    parser.add_argument("--sort", choices=("tottime", "cumulative"), default="tottime")
    parser.add_argument("--lines", type=int, default=30)
    parser.add_argument("--before", type=Path, help="a checkout of robin to measure alternately with this one")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.before is not None:
        alternate(args)
        return
    with tempfile.TemporaryDirectory(prefix="wcpu") as scratch:
        # As under robin serve: metrics in a multiprocess directory, named before prometheus_client is imported.
        metrics = Path(scratch) / "metrics"
        metrics.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        measure(args, scratch)


if __name__ == "__main__":
    main()
