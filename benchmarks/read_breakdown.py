"""Where a read request's time goes: robin's per-request work, piece by piece, in process.

A fresh SQLite database (or with --postgresql a throwaway PostgreSQL server of its own, stopped by pid) holds a
small synthetic fleet (tests/support/synthetic.py: 20 projects, 2,000 volumes, a big project of 300); requests go
through Flask's test client with an admin token (cached after the first request, as on every request but a
token's first):

  project     GET /api/v2/projects/<big project>            the minimal authenticated GET
  one_image   GET /api/v2/projects/<big project>/rbd-images/<name>
  page100     GET /api/v2/projects/<big project>/rbd-images?limit=100

Each runs --repeats times unprofiled (CPU ms per request: the process's CPU time over the run, which other work
on the machine disturbs less than wall time; and the wall time, which includes the database's round trips) and
--repeats times under cProfile, whose cumulative times of the pieces below are printed per request. cProfile slows
Python down, more so where calls are many: read the pieces against each other and against the unprofiled total,
not as absolute figures.

    .venv/bin/python benchmarks/read_breakdown.py [--repeats 300] [--postgresql] [--json out.json]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.listing_at_scale import admin_headers, make_app, make_database  # noqa: E402
from tests.support.synthetic import Fleet, populate  # noqa: E402

# (label, file suffix, function name): the pieces of a request, by the function that does each. A piece that a
# version of robin does not have is printed as "-".
PIECES = (
    ("whole request (WSGI app)", "flask/app.py", "wsgi_app"),
    ("request context push (Flask, session cookie)", "flask/ctx.py", "push"),
    ("before_request hooks", "flask/app.py", "preprocess_request"),
    ("  request id", "robin/log.py", "_start"),
    ("  body size limit", "robin/__init__.py", "_within_limit"),
    ("  authentication (token cached)", "robin/auth/hooks.py", "_authenticate"),
    ("query arguments (webargs)", "webargs/core.py", "parse"),
    ("the view", "flask_smorest/response.py", "wrapper"),
    ("  volume page (service)", "robin/volumes/service.py", "list_page"),
    ("  one volume (service)", "robin/volumes/service.py", "get"),
    ("  one project (service)", "robin/projects/service.py", "get"),
    ("  database transaction (ORM session)", "robin/db.py", "_transaction"),
    ("  database transaction (Core connection)", "robin/db.py", "read_connection"),
    ("  JSON encoding", "flask/json/provider.py", "dumps"),
    ("  response schema dump (marshmallow)", "marshmallow/schema.py", "dump"),
    ("after_request hooks", "flask/app.py", "process_response"),
    ("  latency metric, access log, X-Request-Id", "robin/log.py", "_finish"),
    ("  audit hook (reads: nothing)", "robin/audit/service.py", "_audit"),
)


def pieces(profile: cProfile.Profile, requests: int) -> dict:
    stats = pstats.Stats(profile).stats
    found = {}
    for label, suffix, name in PIECES:
        total = sum(row[3] for (path, _, function), row in stats.items()
                    if function == name and path.endswith(suffix))
        found[label] = total * 1000 / requests if total else None
    return found


def measure(client, headers: dict, path: str, query: dict, repeats: int) -> dict:
    for _ in range(20):
        assert client.get(path, query_string=query, headers=headers).status_code == 200
    started, began = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        client.get(path, query_string=query, headers=headers)
    cpu_ms = (time.process_time() - started) * 1000 / repeats
    wall_ms = (time.perf_counter() - began) * 1000 / repeats
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(repeats):
        client.get(path, query_string=query, headers=headers)
    profile.disable()
    return {"cpu_ms": cpu_ms, "wall_ms": wall_ms, "profiled_ms": pieces(profile, repeats)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = {"load_average_start": os.getloadavg(), "requests": {}}
    with ExitStack() as stack:
        app = make_app(make_database(stack, args.postgresql))
        from robin.db import db

        fleet = Fleet(projects=20, volumes=2000, big_project_volumes=300, snapshots=100)
        populate(db.engine, fleet)
        headers = admin_headers(app)
        client = app.test_client()
        base = f"/api/v2/projects/{fleet.big_project}"
        name = client.get(f"{base}/rbd-images", query_string={"limit": 1}, headers=headers).json["items"][0]["name"]
        calls = {"project": (base, {}), "one_image": (f"{base}/rbd-images/{name}", {}),
                 "page100": (f"{base}/rbd-images", {"limit": 100})}
        for kind, (path, query) in calls.items():
            report["requests"][kind] = measure(client, headers, path, query, args.repeats)
        db.dispose()
    report["load_average_end"] = os.getloadavg()
    requests = report["requests"]
    print("| piece (ms per request under cProfile) | " + " | ".join(requests) + " |")
    print("|---|" + "---:|" * len(requests))
    for label, _, _ in PIECES:
        cells = [requests[kind]["profiled_ms"][label] for kind in requests]
        print(f"| {label} | " + " | ".join("-" if cell is None else f"{cell:.3f}" for cell in cells) + " |")
    print("| **CPU per request, unprofiled** | " + " | ".join(f"**{requests[kind]['cpu_ms']:.3f}**"
                                                             for kind in requests) + " |")
    print("| wall time per request, unprofiled (the database's round trips included) | "
          + " | ".join(f"{requests[kind]['wall_ms']:.3f}" for kind in requests) + " |")
    print(f"\nload average {report['load_average_start']} -> {report['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
