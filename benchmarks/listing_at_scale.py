"""What robin's listings cost against a large fleet: rows only, no Ceph (a listing reads rows).

One run makes a migrated database (SQLite in a temporary directory, or with --postgresql a throwaway PostgreSQL
server of its own on 127.0.0.1, stopped by pid at the end), fills it with tests.support.synthetic (default:
100,000 volumes over 1,000 projects, one of them holding --big-project volumes, 50,000 snapshots, 100,000 audit
events), then times in-process requests through Flask's test client (robin's whole request path without HTTP or
gunicorn), --repeats times each, interleaved:

  project_page   GET /api/v2/projects/<big project>/rbd-images?limit=<--page>
  deep_page      the same from the middle of the project's images (a cursor)
  all_volumes    GET /api/v2/volumes?limit=1000: a 1,000-item page out of every volume
  all_volumes_deep  the same from the middle of the fleet (a cursor at the 500th project)
  snapshots      GET /api/v2/snapshots?limit=1000
  one_image      GET /api/v2/projects/<big project>/rbd-images/<name>
  metrics        GET /metrics: a scrape. Before it is timed, the maintenance leader's pass that sums the volume
                 totals the scrape reports (robin.audit.usage.store_totals) runs once, timed on its own (--repeats
                 times, after the requests); a robin without that pass sums every volume at each scrape. Then the
                 scrape's quota and volume gauges are written from the same rows by prometheus_client and by
                 robin's own writer, --repeats times each, interleaved.

    .venv/bin/python benchmarks/listing_at_scale.py [--volumes 100000] [--big-project 1000] [--page 500]
        [--repeats 50] [--requests metrics,...] [--postgresql] [--profile listing.prof] [--json out.json]

--profile writes a cProfile of the project_page requests (read it with `python -m pstats`).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.api_vs_binding import machine, run_main, stop_cleanly_on_signals, summary  # noqa: E402
from robin.config import Settings  # noqa: E402
from tests.support.synthetic import Fleet, populate  # noqa: E402


def make_database(stack: ExitStack, postgresql: bool) -> str:
    if postgresql:
        from tests.support.postgres import PostgresServer

        server = PostgresServer.start()
        stack.callback(server.stop)
        return server.create_database("robin_scale")
    directory = tempfile.mkdtemp(prefix="robin-scale-db-")
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    return f"sqlite:///{directory}/robin.db"


def make_app(database_url: str):
    from robin import create_app
    from robin.db import upgrade

    upgrade(database_url)
    # No ROBIN_CEPH_CONF: nothing here reaches Ceph. The maintenance loop does not run in-process.
    return create_app(Settings(database_url=database_url, log_level="WARNING", max_volume_bytes=2**50))


def admin_headers(app) -> dict:
    from robin.auth.models import Role
    from robin.auth.service import create_token

    with app.app_context():
        return {"Authorization": f"Bearer {create_token(Role.ADMIN, name='scale-bench')[0]}"}


def requests_to_time(client, headers: dict, big_project: str, page: int, middle_project_id: int) -> dict:
    from robin.pagination import encode_cursor

    base = f"/api/v2/projects/{big_project}/rbd-images"
    first = client.get(base, query_string={"limit": page}, headers=headers).json
    half = client.get(base, query_string={"limit": max(1, len(first["items"]) // 2)}, headers=headers).json
    name = first["items"][0]["name"]
    deep = {"limit": page, "cursor": half["next_cursor"]} if half["next_cursor"] else {"limit": page}
    # The listing's cursor names the last item's (project id, name, kind index): this one, the middle project's start.
    middle = encode_cursor([middle_project_id, "", 0])
    return {
        "project_page": (base, {"limit": page}),
        "deep_page": (base, deep),
        "all_volumes": ("/api/v2/volumes", {"limit": 1000}),
        "all_volumes_deep": ("/api/v2/volumes", {"limit": 1000, "cursor": middle}),
        "snapshots": ("/api/v2/snapshots", {"limit": 1000}),
        "one_image": (f"{base}/{name}", {}),
        "metrics": ("/metrics", {}),
    }


def store_totals(app) -> Callable[[], object] | None:
    """The maintenance leader's totals pass, for a robin that has one."""
    from robin.audit import usage

    if not hasattr(usage, "store_totals"):
        return None

    def run():
        with app.app_context():
            return usage.store_totals()
    return run


def time_totals_pass(run, repeats: int) -> dict:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return summary(samples)


def render_comparison(app, repeats: int) -> dict | None:
    """The scrape's quota and volume gauges written by prometheus_client (gauge families, generate_latest, as
    robin did) and by robin.metrics.fleet_exposition, from the same rows, interleaved; for a robin that has it."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    from robin import metrics
    from robin.audit import usage

    if not hasattr(metrics, "fleet_exposition"):
        return None
    with app.app_context():
        rows = usage.scrape_rows()

    class Families:
        def collect(self):
            for name, help_text, key in metrics.PROJECT_GAUGES:
                family = GaugeMetricFamily(name, help_text, labels=["project"])
                for row in rows["projects"]:
                    if row[key] is not None:
                        family.add_metric([row["project"]], row[key])
                yield family
            for name, help_text, key in metrics.POOL_GAUGES:
                family = GaugeMetricFamily(name, help_text, labels=["cluster", "kind", "pool"])
                for row in rows["pools"]:
                    family.add_metric([row["cluster"], row["kind"], row["pool"]], row[key])
                yield family

    registry = CollectorRegistry()
    registry.register(Families())
    ways = {"prometheus_client": lambda: generate_latest(registry),
            "direct": lambda: metrics.fleet_exposition(rows).encode()}
    samples = {way: [] for way in ways}
    for _ in range(repeats):
        for way, write in ways.items():
            started = time.perf_counter()
            write()
            samples[way].append((time.perf_counter() - started) * 1000)
    return {way: summary(values) for way, values in samples.items()}


def measure(client, headers: dict, calls: dict, repeats: int, profiler: cProfile.Profile | None) -> dict:
    samples = {kind: [] for kind in calls}
    sizes = {}
    kinds = list(calls)
    for i in range(repeats):
        for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
            path, query = calls[kind]
            profiling = profiler is not None and kind == "project_page"
            if profiling:
                profiler.enable()
            started = time.perf_counter()
            response = client.get(path, query_string=query, headers=headers)
            samples[kind].append((time.perf_counter() - started) * 1000)
            if profiling:
                profiler.disable()
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.data[:500]!r}")
            items = len(response.json.get("items", [None])) if response.is_json else None
            sizes[kind] = {"items": items, "bytes": len(response.data)}
    return {kind: {**summary(values), **sizes[kind]} for kind, values in samples.items()}


def markdown(results: dict) -> str:
    lines = ["| request | items | body KB | median ms | p95 ms |", "|---|---|---|---|---|"]
    for kind, row in results.items():
        items = "-" if row["items"] is None else row["items"]
        lines.append(f"| {kind} | {items} | {row['bytes'] / 1024:.0f} | {row['median_ms']:.1f} | "
                     f"{row['p95_ms']:.1f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--big-project", type=int, default=1000, help="volumes of the one big project")
    parser.add_argument("--snapshots", type=int, default=50_000)
    parser.add_argument("--page", type=int, default=500, help="the project page's size")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--requests", help="comma-separated: time only these requests (default: all)")
    parser.add_argument("--postgresql", action="store_true",
                        help="on a PostgreSQL server of its own (default: SQLite in a temporary directory)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the project_page requests here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.big_project > args.volumes or min(args.volumes, args.projects, args.page, args.repeats) < 1:
        parser.error("sizes must be positive and --big-project at most --volumes")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    fleet = Fleet(projects=args.projects, volumes=args.volumes, big_project_volumes=args.big_project,
                  snapshots=args.snapshots)
    load_start = os.getloadavg()
    with ExitStack() as stack:
        app = make_app(make_database(stack, args.postgresql))
        from robin.db import db

        started = time.perf_counter()
        project_ids = populate(db.engine, fleet)["project_ids"]
        if not db.is_sqlite:
            with db.engine.begin() as connection:  # committed: statistics rolled back are lost
                connection.exec_driver_sql("ANALYZE")
        fill_s = time.perf_counter() - started
        print(f"{fleet} written in {fill_s:.1f} s ({db.engine.dialect.name})", flush=True)
        headers = admin_headers(app)
        client = app.test_client()
        calls = requests_to_time(client, headers, fleet.big_project, args.page,
                                 project_ids[fleet.project(args.projects // 2)])
        if args.requests:
            calls = {kind: calls[kind] for kind in args.requests.split(",")}
        totals_pass = store_totals(app)
        if totals_pass is not None:
            totals_pass()
        measure(client, headers, calls, 2, None)  # warm-up: caches, compiled statements
        profiler = cProfile.Profile() if args.profile else None
        results = measure(client, headers, calls, args.repeats, profiler)
        if profiler is not None:
            profiler.dump_stats(args.profile)
        print(markdown(results), flush=True)
        totals = time_totals_pass(totals_pass, args.repeats) if totals_pass is not None else None
        if totals is not None:
            print(f"the leader's totals pass (store_totals): median {totals['median_ms']:.1f} ms, "
                  f"p95 {totals['p95_ms']:.1f} ms", flush=True)
        rendering = render_comparison(app, args.repeats) if "metrics" in calls else None
        for way, figures in (rendering or {}).items():
            print(f"the scrape's quota and volume gauges written by {way}: median {figures['median_ms']:.1f} ms, "
                  f"p95 {figures['p95_ms']:.1f} ms", flush=True)
        print(f"load average (1/5/15 min): {load_start} at the start, {os.getloadavg()} at the end", flush=True)
        report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
                  "database": db.engine.dialect.name, "fleet": vars(fleet) | {"fill_seconds": fill_s},
                  "load_average": {"start": load_start, "end": os.getloadavg()},
                  "results": results, "totals_pass": totals,
                  "rendering": rendering}
        db.dispose()  # before the server stops
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
