"""What the audit trail's indexes (migration 0018_audit_event_indexes) cost a write and save a read, on PostgreSQL.

One run starts a throwaway PostgreSQL server of its own on 127.0.0.1 (stopped by pid at the end) with two
databases holding the same --events audit rows (1,000 projects, 500 actors, 12 common actions and a rare one, 2%
failures, one create in ten naming its volume in the body), both migrated to the head: `before` without 0018's
five indexes (dropped; its two functions stay), `after` with them. Then, --repeats rounds, alternating which
database goes first:

  insert       one audit row in a transaction of its own, as a request's row is written (robin's own INSERT)
  <filter>     GET /api/v2/audit/events?<filter>&limit=100 through Flask's test client (robin's request path
               without HTTP): by project, actor, a rare action, outcome=failure, a target's name, an hour

The endpoint is the same code on both; only the indexes differ.

    .venv/bin/python benchmarks/audit_events.py [--events 200000] [--repeats 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.api_vs_binding import machine, run_main, stop_cleanly_on_signals, summary  # noqa: E402
from robin.config import Settings  # noqa: E402
from tests.support.synthetic import EPOCH  # noqa: E402

INDEXES = ("ix_audit_events_actor", "ix_audit_events_action", "ix_audit_events_outcome",
           "ix_audit_events_path_segments", "ix_audit_events_created_name")
CHUNK = 5000


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="write the results here too")
    return parser.parse_args(argv)


ACTIONS = tuple(f"{method} /api/v2/projects/<project>{route}" for method, route in (
    ("POST", "/rbd-images"), ("PATCH", "/rbd-images/<name>"), ("DELETE", "/rbd-images/<name>"),
    ("POST", "/cephfs-paths"), ("PATCH", "/cephfs-paths/<name>"), ("DELETE", "/cephfs-paths/<name>"),
    ("POST", "/rbd-images/<name>/snapshots"), ("DELETE", "/rbd-images/<name>/snapshots/<snapshot>"),
    ("POST", "/rbd-images/<name>/restore"), ("POST", "/rbd-images/<name>/flatten"), ("PATCH", ""),
    ("POST", "/rbd-images:adopt")))
RARE_ACTION = "DELETE /api/v2/clusters/<name>"  # one event in a thousand


def event(i: int) -> dict:
    project, volume = f"p{i % 1000:04d}", f"vol-{i:07d}"
    create, failed = i % 10 == 0, i % 50 == 0
    return {"at": EPOCH + timedelta(seconds=i), "actor": f"token:{i % 500}:bench", "project": project,
            "action": RARE_ACTION if i % 1000 == 999 else ACTIONS[i % len(ACTIONS)],
            "target": f"/api/v2/projects/{project}/rbd-images" + ("" if create else f"/{volume}"),
            "outcome": "failure" if failed else "success", "status_code": 422 if failed else 200,
            "error_code": "validation_error" if failed else None, "request_id": str(uuid.uuid4()),
            "details": {"request": {"name": volume}} if create else {}}


def fill(url: str, indexed: bool, events: int) -> None:
    """The database at the head, without migration 0018's indexes unless `indexed` (its functions stay: the
    endpoint calls them)."""
    from sqlalchemy import create_engine, insert

    from robin.audit.models import AuditEvent
    from robin.db import normalize_url, upgrade

    upgrade(url)
    engine = create_engine(normalize_url(url))
    if not indexed:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP INDEX " + ", ".join(INDEXES))
    with engine.begin() as connection:
        for start in range(0, events, CHUNK):
            connection.execute(insert(AuditEvent), [event(i) for i in range(start, min(start + CHUNK, events))])
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE audit_events")  # as after a day's autovacuum
    engine.dispose()


def queries(events: int) -> dict:
    middle = events // 2
    hour = EPOCH + timedelta(seconds=middle)
    return {"project": {"project": "p0007"}, "actor": {"actor": "token:7:bench"},
            "action": {"action": RARE_ACTION},
            "outcome=failure": {"outcome": "failure"}, "target name": {"target": f"vol-{middle + 1:07d}"},
            "hour": {"since": hour.isoformat(), "until": (hour + timedelta(hours=1)).isoformat()}}


def one_insert(connection) -> None:
    from robin.audit.service import _INSERT

    with connection.begin():
        connection.execute(_INSERT, [event(10**9 + time.perf_counter_ns() % 10**6)])


def run(args) -> dict:
    from sqlalchemy import create_engine

    from robin import create_app
    from robin.auth.models import Role
    from robin.auth.service import register_token
    from robin.db import db, normalize_url
    from tests.support.postgres import PostgresServer

    results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with ExitStack() as stack:
        server = PostgresServer.start()
        stack.callback(server.stop)
        urls = {"before": server.create_database("audit_before"), "after": server.create_database("audit_after")}
        fill(urls["before"], False, args.events)
        fill(urls["after"], True, args.events)
        engines = {name: create_engine(normalize_url(url)) for name, url in urls.items()}
        for engine in engines.values():
            stack.callback(engine.dispose)
        state = tempfile.mkdtemp(prefix="robin-audit-bench-")  # the key robin makes when none is configured
        stack.callback(shutil.rmtree, state, ignore_errors=True)
        app = create_app(Settings(database_url=urls["after"], log_level="WARNING", state_dir=state))
        token = "robin_" + uuid.uuid4().hex
        for url in urls.values():  # the same auditor token in both
            db.configure(url)
            with app.app_context():
                register_token(token, Role.AUDITOR, name="bench")
        client, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
        for round_ in range(args.repeats):
            for name in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                with engines[name].connect() as connection:
                    start = time.perf_counter()
                    one_insert(connection)
                    results[name].setdefault("insert", []).append((time.perf_counter() - start) * 1000)
                db.configure(urls[name])
                client.get("/api/v2/audit/events", query_string={"limit": 1}, headers=headers)  # connected, untimed
                for label, query in queries(args.events).items():
                    start = time.perf_counter()
                    response = client.get("/api/v2/audit/events", query_string={**query, "limit": 100},
                                          headers=headers)
                    results[name].setdefault(label, []).append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, response.get_json()
    return {name: {label: summary(samples) for label, samples in timings.items()}
            for name, timings in results.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"events": args.events, "repeats": args.repeats}, "results": run(args)}
    for name, timings in report["results"].items():
        for label, figures in timings.items():
            print(f"{name:7} {label:16} median {figures['median_ms']:8.2f} ms  p95 {figures['p95_ms']:8.2f} ms  "
                  f"n={figures['n']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
