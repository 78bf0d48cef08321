"""What a quota reservation's sum costs as a project grows: with and without the usage indexes.

Every create, resize, clone, restore and snapshot sums its project's live volumes (robin.projects.service
.provisioned) while it holds the project's lock, on SQLite the database's one write lock. For each project size
given, one run makes two migrated databases holding the same synthetic fleet (tests.support.synthetic: one project
of that many volumes, some in the trash or deleted, beside a few small ones): one at `0021_node_role` (before the
usage indexes), one at the head. It then times the reservation's statement on the big project, --repeats times on
each, alternating, through a Core connection as a create sends it. SQLite in a temporary directory, or with
--postgresql a throwaway PostgreSQL server of its own on 127.0.0.1 (VACUUM ANALYZE after the fill), stopped by pid
at the end.

    .venv/bin/python benchmarks/reservation_at_scale.py [--sizes 1000,10000,50000] [--repeats 200] [--postgresql]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, select  # noqa: E402

from benchmarks.api_vs_binding import machine, run_main, stop_cleanly_on_signals, summary  # noqa: E402
from robin.db import normalize_url, upgrade  # noqa: E402
from robin.projects.models import Project  # noqa: E402
from robin.projects.service import provisioned  # noqa: E402
from tests.support.synthetic import Fleet, populate  # noqa: E402

BEFORE = "0021_node_role"  # the last revision without the usage indexes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="the big project's volumes, comma-separated")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--postgresql", action="store_true", help="a PostgreSQL server of its own, not SQLite")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    if min(args.sizes + [args.repeats]) < 1:
        parser.error("sizes and repeats must be positive")
    return args


def database_maker(stack: ExitStack, postgresql: bool):
    if postgresql:
        from tests.support.postgres import PostgresServer

        server = PostgresServer.start()
        stack.callback(server.stop)
        return lambda: server.create_database("robin_reserve_" + uuid.uuid4().hex[:12])
    directory = tempfile.mkdtemp(prefix="robin-reserve-")
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    return lambda: f"sqlite:///{directory}/{uuid.uuid4().hex[:12]}.db"


def filled(stack: ExitStack, url: str, revision: str, fleet: Fleet) -> tuple:
    """The engine of a database at `revision` holding `fleet`, and the big project's id."""
    upgrade(url, revision)
    engine = create_engine(normalize_url(url))
    stack.callback(engine.dispose)
    populate(engine, fleet)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    with engine.connect() as connection:
        return engine, connection.scalar(select(Project.id).where(Project.name == fleet.big_project))


def measure(sides: dict, repeats: int) -> dict:
    """The reservation's sum on each side, alternating, through one Core connection per side (as a create's)."""
    samples = {label: [] for label in sides}
    with ExitStack() as stack:
        connections = {label: stack.enter_context(engine.connect()) for label, (engine, _) in sides.items()}
        answers = {label: provisioned(connections[label], project_id) for label, (_, project_id) in sides.items()}
        assert len(set(answers.values())) == 1, answers  # the same sums either way
        for _ in range(repeats):
            for label, (_, project_id) in sides.items():
                started = time.perf_counter()
                provisioned(connections[label], project_id)
                samples[label].append((time.perf_counter() - started) * 1000)
            for connection in connections.values():
                connection.rollback()  # end the read transaction, as a reservation's commit would
    return {label: summary(values) for label, values in samples.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "load_start": os.getloadavg(), "results": {}}
    with ExitStack() as stack:
        new_database = database_maker(stack, args.postgresql)
        for size in args.sizes:
            fleet = Fleet(projects=20, volumes=size + 200, big_project_volumes=size, snapshots=100, tokens=1,
                          audit_events=1, prefix=f"reserve{size}")
            sides = {"before": filled(stack, new_database(), BEFORE, fleet),
                     "after": filled(stack, new_database(), "head", fleet)}
            results = measure(sides, args.repeats)
            report["results"][size] = results
            print(f"{size:>7,} volumes: before {results['before']['median_ms']:.3f} ms "
                  f"(p95 {results['before']['p95_ms']:.3f}), after {results['after']['median_ms']:.3f} ms "
                  f"(p95 {results['after']['p95_ms']:.3f})", flush=True)
    report["load_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    run_main(main)
