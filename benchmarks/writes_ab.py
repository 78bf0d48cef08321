"""Two robin source trees under the same write load, interleaved in one run: creates at 8 connections, A and B.

One dev Ceph cluster (or --ceph-conf), then --rounds rounds of: for each tree (A = --before, a directory holding
another commit's source, e.g. from `git archive`; B = this checkout), one `robin serve` (--workers x --threads) run
from that tree on a fresh database (SQLite, or with --postgresql a fresh database on one PostgreSQL server), a
project, an untimed --warmup, then `POST /api/v2/projects/{p}/rbd-images` (1 GiB, a new name each) from
--concurrency keep-alive connections for --duration seconds (benchmarks/load.py's closed loop); and once a round
the raw binding's `RBD().create` at the same concurrency. The order of A and B alternates from round to round, so
that a slow spell of the machine falls on both. Prints one row per phase: requests/s, p50 and p99 ms, errors,
the load average before and after.

    .venv/bin/python benchmarks/writes_ab.py --before /tmp/robin-before [--rounds 3] [--duration 15] [--postgresql]
        [--postgresql-delay-ms 0.25]

--postgresql-delay-ms puts tests/support/pg_proxy.py (a process of its own) between robin and PostgreSQL, delaying
every chunk that long each way: PostgreSQL on another host, as in production.

Everything it starts is stopped by pid when it ends (on failure and Ctrl-C too); the images go with the dev cluster.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks.load import (  # noqa: E402
    GiB,
    Target,
    create_project,
    drive,
    fmt,
    make_admin_token,
    make_database,
    postgres_database,
    rados_ioctx,
    raw_creates,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from robin.db import upgrade  # noqa: E402
from tests.support.pg_proxy import proxy_process  # noqa: E402
from tests.support.server import running_replica  # noqa: E402


def fresh_database(stack: ExitStack, server_url: str | None, number: int) -> str:
    """A new SQLite file, or a new database on the PostgreSQL server of the run (migrated to this tree's head)."""
    if server_url is None:
        return make_database(stack)
    url = make_url(server_url).set(database=f"robin_ab_{number}").render_as_string(hide_password=False)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE robin_ab_{number}")
    admin.dispose()
    upgrade(url)
    return url


def creates(label: str, tree: Path, database_url: str, conf: str, args) -> dict:
    token = make_admin_token(database_url, conf)
    env = {"PYTHONPATH": str(tree), "ROBIN_THREADS": str(args.threads)}
    # The tree as the working directory too: `python -m` puts it ahead of PYTHONPATH.
    with running_replica(database_url, conf, args.workers, env, cwd=str(tree)) as server:
        project = f"ab-{label.lower()}-{os.urandom(3).hex()}"
        create_project(server.url, token, project)
        names = iter(range(10**9))
        target = Target("POST", f"/api/v2/projects/{project}/rbd-images", token, 201,
                        lambda: {"name": f"{project}-{next(names)}", "size_bytes": GiB})
        drive([server.url], target, args.concurrency, args.warmup)
        return drive([server.url], target, args.concurrency, args.duration)


def row(label: str, result: dict) -> str:
    return (f"| {label} | {result['per_s']:.1f} | {fmt(result['p50_ms'] or 0)} | {fmt(result['p99_ms'] or 0)} | "
            f"{result.get('errors', 0)} | {result['load_start']} -> {result['load_end']} |")


def run(args) -> list[str]:
    rows = ["| phase | req/s | p50 ms | p99 ms | errors | load |", "|---|---:|---:|---:|---:|---|"]
    trees = {"A": args.before.resolve(), "B": REPO}
    with ExitStack() as stack:
        conf = start_cluster(stack, args.ceph_conf)
        ioctx = stack.enter_context(rados_ioctx(conf))
        server_url = stack.enter_context(postgres_database()) if args.postgresql else None
        number = 0
        for round_number in range(args.rounds):
            order = ("A", "B") if round_number % 2 == 0 else ("B", "A")
            for label in order:
                number += 1
                print(f"{time.strftime('%H:%M:%S')} round {round_number + 1}, {label} (load "
                      f"{os.getloadavg()[0]:.2f})", flush=True)
                database_url = fresh_database(stack, server_url, number)
                if args.postgresql_delay_ms:
                    database_url = stack.enter_context(proxy_process(database_url, args.postgresql_delay_ms))
                result = creates(label, trees[label], database_url, conf, args)
                rows.append(row(f"round {round_number + 1}, {label}", result))
                print(rows[-1], flush=True)
            raw = raw_creates(ioctx, args.concurrency, args, [])
            rows.append(row(f"round {round_number + 1}, raw `RBD().create`", raw))
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="tree A: another commit's source")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--postgresql", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--postgresql-delay-ms", type=float, default=0.0,
                        help="robin reaches PostgreSQL through a proxy that delays every chunk this long each way")
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    args = parser.parse_args(argv)
    stop_cleanly_on_signals()
    print("\n".join(run(args)))
    return 0


if __name__ == "__main__":
    run_main(main)
