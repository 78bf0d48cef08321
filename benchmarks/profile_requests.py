"""Where the time of one write request goes: SQL statements, transactions, Ceph calls and robin's Python.

In-process, through Flask's test client (no HTTP server, no network between client and robin), on a dev Ceph
cluster this script starts and a fresh SQLite database (or, with --db postgresql, a PostgreSQL server it starts).
For each write path:

  rbd_create      POST   /api/v2/projects/{p}/rbd-images
  rbd_resize      PATCH  /api/v2/projects/{p}/rbd-images/{name}            (to twice its size)
  rbd_delete      DELETE /api/v2/projects/{p}/rbd-images/{name}            (to the trash, robin's default)
  rbd_purge       DELETE /api/v2/projects/{p}/rbd-images/{name}?purge=true (removed at once)
  snapshot_create POST   /api/v2/projects/{p}/rbd-images/{name}/snapshots
  snapshot_delete DELETE /api/v2/projects/{p}/rbd-images/{name}/snapshots/{snapshot}
  rollback        POST   /api/v2/projects/{p}/rbd-images/{name}/snapshots/{snapshot}/rollback
  clone_create    POST   /api/v2/projects/{p}/rbd-images  {"source": {"image", "snapshot"}}
  cephfs_create   POST   /api/v2/projects/{p}/cephfs-paths

it runs --iterations requests (after warm-up ones) and prints, per request (medians): SQL statements (BEGIN and
COMMIT not counted), transactions committed, Ceph calls, and the wall time split into time inside Ceph binding calls
(robin.metrics' per-operation histogram, which robin.ceph feeds around every call), time inside SQL statements
(cursor executes, as SQLAlchemy's before/after_cursor_execute events see them, and commits) and the rest:
robin's own Python, Flask and the test client. The request thread's CPU time beside it counts robin's Python and
SQLite's work (and the client's), not the Ceph call, which runs on a lane thread: less moved by the machine's
load than the wall times, so the figure to compare two checkouts by.

    .venv/bin/python benchmarks/profile_requests.py [--iterations 30] [--db sqlite|postgresql] \
        [--ops snapshot_create,clone_create] [--cprofile rbd_create] [--cprofile-sort tottime] [--cprofile-lines 30]

--ops runs only those paths (all of them by default). --cprofile OP runs that path once more per iteration under
cProfile and prints its hottest functions (cumulative, or by --cprofile-sort) and its function calls per request.
The dev cluster (and PostgreSQL) is stopped by pid when the script ends, on failure and Ctrl-C too.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import event

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.in_process import Requests, cluster_and_database, machine, profiled, robin_app  # noqa: E402
from robin.metrics import CEPH_OP_SECONDS  # noqa: E402

WARMUP = 3
OPS = ("rbd_create", "rbd_resize", "rbd_delete", "rbd_purge", "snapshot_create", "snapshot_delete", "rollback",
       "clone_create", "cephfs_create")


# --- counting -----------------------------------------------------------------------------------

@dataclass
class Tally:
    statements: int = 0
    transactions: int = 0
    sql_seconds: float = 0.0
    texts: list[str] = field(default_factory=list)


class SqlCounter:
    """Statements, their time and the transactions committed on one engine, between start() and stop()."""

    def __init__(self, engine):
        self.tally: Tally | None = None
        self._started: list[float] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "commit", self._commit)
        # A commit is no cursor execute (no event times it): time the dialect's own call, on this engine only.
        commit = engine.dialect.do_commit

        def timed_commit(dbapi_connection):
            started = time.perf_counter()
            try:
                commit(dbapi_connection)
            finally:
                if self.tally is not None:
                    self.tally.sql_seconds += time.perf_counter() - started
        engine.dialect.do_commit = timed_commit

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._started.append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        started = self._started.pop()
        if self.tally is None:
            return
        self.tally.sql_seconds += time.perf_counter() - started
        if not statement.lstrip().upper().startswith("BEGIN"):
            self.tally.statements += 1
            self.tally.texts.append(" ".join(statement.split())[:160])

    def _commit(self, conn):
        if self.tally is not None:
            self.tally.transactions += 1

    @contextmanager
    def counting(self):
        self.tally = Tally()
        try:
            yield self.tally
        finally:
            self.tally = None


def ceph_totals() -> tuple[dict[str, float], float]:
    """(calls per operation, seconds) robin.ceph has spent in binding calls in this process so far."""
    calls: dict[str, float] = {}
    seconds = 0.0
    for metric in CEPH_OP_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                operation = sample.labels["operation"]
                calls[operation] = calls.get(operation, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                seconds += sample.value
    return calls, seconds


@dataclass
class Sample:
    total_ms: float
    cpu_ms: float
    ceph_ms: float
    sql_ms: float
    ceph_calls: int
    ceph_operations: list[str]
    statements: int
    transactions: int
    texts: list[str]

    @property
    def python_ms(self) -> float:
        return self.total_ms - self.ceph_ms - self.sql_ms


# --- one request -------------------------------------------------------------------------------

def measure(requests: Requests, sql: SqlCounter, op: str) -> Sample:
    request = requests.prepare(op)
    calls_before, ceph_before = ceph_totals()
    with sql.counting() as tally:
        start, cpu_start = time.perf_counter(), time.thread_time()
        request()
        total, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    calls_after, ceph_after = ceph_totals()
    operations = sorted(f"{operation} x{count:g}" for operation in calls_after
                        if (count := calls_after[operation] - calls_before.get(operation, 0.0)))
    return Sample(total_ms=total * 1000, cpu_ms=cpu * 1000, ceph_ms=(ceph_after - ceph_before) * 1000,
                  sql_ms=tally.sql_seconds * 1000,
                  ceph_calls=round(sum(calls_after.values()) - sum(calls_before.values())),
                  ceph_operations=operations, statements=tally.statements,
                  transactions=tally.transactions, texts=tally.texts)


# --- report -------------------------------------------------------------------------------------

def median(values) -> float:
    return statistics.median(values)


def table(results: dict[str, list[Sample]]) -> str:
    rows = ["| request | SQL statements | transactions | Ceph calls | total ms | Ceph ms | SQL ms | robin Python ms "
            "| request thread CPU ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for op, samples in results.items():
        rows.append(f"| {op} | {median([s.statements for s in samples]):g} | "
                    f"{median([s.transactions for s in samples]):g} | {median([s.ceph_calls for s in samples]):g} | "
                    f"{median([s.total_ms for s in samples]):.1f} | {median([s.ceph_ms for s in samples]):.1f} | "
                    f"{median([s.sql_ms for s in samples]):.1f} | {median([s.python_ms for s in samples]):.1f} | "
                    f"{median([s.cpu_ms for s in samples]):.2f} |")
    return "\n".join(rows)


# --- setup --------------------------------------------------------------------------------------

def run(args, ceph_conf: str, database_url: str) -> None:
    from robin.db import db

    with robin_app(database_url, ceph_conf, "profile") as requests:
        sql = SqlCounter(db.engine)
        ops = args.ops
        for op in ops:
            for _ in range(WARMUP):
                measure(requests, sql, op)
        results = {op: [] for op in ops}
        for _ in range(args.iterations):  # interleaved: a slow spell of the cluster hits every path
            for op in ops:
                results[op].append(measure(requests, sql, op))
        print(f"## {db.engine.dialect.name}, {args.iterations} requests each, medians ({machine()})\n")
        print(table(results))
        print("\nCeph calls and statements of one request of each kind:")
        for op, samples in results.items():
            print(f"\n{op}: Ceph {', '.join(samples[-1].ceph_operations) or 'none'}")
            for text in samples[-1].texts:
                print(f"  {text}")
        if args.cprofile:
            print()
            print(profiled(requests.prepare, args.cprofile, args.iterations, args.cprofile_sort,
                           args.cprofile_lines))


def _ops(value: str) -> tuple[str, ...]:
    ops = tuple(op.strip() for op in value.split(",") if op.strip())
    unknown = sorted(set(ops) - set(OPS))
    if unknown or not ops:
        raise argparse.ArgumentTypeError(f"unknown ops {unknown}; choose from {', '.join(OPS)}")
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--ops", type=_ops, default=OPS, help=f"comma-separated, of {', '.join(OPS)}")
    parser.add_argument("--cprofile", choices=OPS, help="also profile this request with cProfile")
    parser.add_argument("--cprofile-sort", choices=("cumulative", "tottime"), default="cumulative")
    parser.add_argument("--cprofile-lines", type=int, default=30)
    args = parser.parse_args()
    with cluster_and_database(args.db, "rbp") as (ceph_conf, database_url):
        run(args, ceph_conf, database_url)


if __name__ == "__main__":
    main()
