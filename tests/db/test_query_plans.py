"""Every list and lookup query robin issues on a request path is served by an index, at scale.

PostgreSQL only: its planner, with 125,000 synthetic rows (tests/support/synthetic.py) and statistics from
ANALYZE, chooses a sequential scan wherever no index fits. The statements are not copied here: each case calls
robin's own service function, the statements it sends are captured as sent (with their parameters) and each is
EXPLAINed. A plan that reads a big table (more than BIG_TABLE_ROWS rows) with a Seq Scan fails the test, naming
the case, the statement and the plan.

Not here: listings that return a whole table by design (the Wayne v1 device list of a cluster, the usage
report, the drift survey, the metrics' totals): they read every row they return, and the maintenance loop's
passes are not request paths.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from robin.audit import events
from robin.auth import service as auth
from robin.auth.identity import Identity
from robin.auth.models import Role
from robin.db import db, upgrade
from robin.migration_records import service as migration_records
from robin.pagination import encode_cursor
from robin.projects import service as projects
from robin.projects.models import Project
from robin.snapshots import service as snapshots
from robin.snapshots.models import Snapshot
from robin.volumes import kinds
from robin.volumes import service as volumes
from robin.volumes.kinds import CEPHFS, RBD
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.support import synthetic
from tests.support.synthetic import Fleet, populate

# About 125,000 rows: 40,000 volumes (and their usage figures), 20,000 snapshots, audit events and tokens; a
# project has about 19 volumes, the big one 2,000.
FLEET = Fleet(projects=2000, volumes=40_000, big_project_volumes=2000, snapshots=20_000, tokens=10_000,
              audit_events=20_000)
BIG_TABLE_ROWS = 2500  # the projects (2,001) may be read whole; anything larger may not
ADMIN = Identity(name="plans", role=Role.ADMIN)


@pytest.fixture(scope="module")
def fleet_url(backend, request) -> str:
    if backend == "sqlite":
        pytest.skip("the plans checked are PostgreSQL's (SQLite gets the same indexes from the migrations)")
    server = request.getfixturevalue("postgres")
    if isinstance(server, str):
        pytest.skip("ROBIN_TEST_POSTGRES_URL names one database; this test needs to make its own")
    url = server.create_database("robin_plans_" + uuid.uuid4().hex[:12])
    upgrade(url)
    # The session's other tests use robin's one database handle: it is pointed back at theirs afterwards.
    previous = db.engine.url.render_as_string(hide_password=False) if db.engine is not None else None
    db.configure(url)
    try:
        populate(db.engine, FLEET)
        with db.engine.begin() as connection:  # committed: statistics rolled back are lost
            connection.exec_driver_sql("ANALYZE")
        yield url
    finally:
        db.dispose()
        if previous is not None:
            db.configure(previous)


@contextmanager
def captured():
    """The statements sent to the database meanwhile, with their parameters."""
    sent: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def big_tables() -> set[str]:
    with db.engine.connect() as connection:
        return set(connection.exec_driver_sql(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND reltuples > %(rows)s "
            "AND relnamespace = 'public'::regnamespace", {"rows": BIG_TABLE_ROWS}).scalars())


def seq_scans(plan: dict, tables: set[str]) -> list[str]:
    found = [plan["Relation Name"]] if plan["Node Type"] == "Seq Scan" and plan.get("Relation Name") in tables \
        else []
    for child in plan.get("Plans", ()):
        found += seq_scans(child, tables)
    return found


def explained(statement: str, parameters, form: str = "JSON"):
    with db.engine.connect() as connection:
        result = connection.exec_driver_sql(f"EXPLAIN (FORMAT {form}) {statement}", parameters)
        if form != "JSON":
            return "\n".join(result.scalars())
        plan = result.scalar_one()
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def addresses() -> dict:
    """Names of rows the cases look up: a spread project's first RBD image and CephFS path, and an image of the
    big project with a snapshot."""
    member_project = FLEET.project(7)

    def first(session, model, project: str) -> str:
        return session.scalar(select(model.name).join(Project, Project.id == model.project_id)
                              .where(Project.name == project, model.state == VolumeState.AVAILABLE)
                              .order_by(model.name).limit(1))

    with db.reading() as session:
        snapshotted = session.execute(
            select(RbdImage.name, Snapshot.name).join(Snapshot, Snapshot.rbd_image_id == RbdImage.id)
            .join(Project, Project.id == RbdImage.project_id).where(Project.name == FLEET.big_project)
            .limit(1)).one()
        return {"member_project": member_project, "rbd": first(session, RbdImage, member_project),
                "cephfs": first(session, CephfsPath, member_project), "snapshotted": tuple(snapshotted)}


def cases(names: dict) -> dict[str, Callable[[], object]]:
    big, small = FLEET.big_project, names["member_project"]
    member = Identity(name="plans-member", role=Role.MEMBER, project=small)
    image, snapshot = names["snapshotted"]
    rbd_cursor = volumes.list_page(ADMIN, RBD, big, 100, None).next_cursor
    cephfs_cursor = volumes.list_page(ADMIN, CEPHFS, big, 100, None).next_cursor
    across_cursor = volumes.list_across(ADMIN, None, 1000, None).next_cursor
    snapshots_cursor = snapshots.list_across(ADMIN, {"limit": 1000}).next_cursor
    events_cursor = events.page(ADMIN, {}, 1000, None).next_cursor
    image_id = volumes.get(ADMIN, RBD, small, names["rbd"]).id
    day = {"since": synthetic.EPOCH + timedelta(hours=2), "until": synthetic.EPOCH + timedelta(hours=3)}

    def clones_check():
        with db.reading() as session:
            volumes._refuse_dependents(session, RBD, volumes.find(session, RBD, big, image))

    def trashed_subvolume_check():
        with db.reading() as session:
            kinds.trashed_namesake(session, 1, "cephfs", names["cephfs"])

    return {
        "token lookup (every request)": lambda: auth.identity_for_secret(FLEET.token_secret(17)),
        "project by name": lambda: projects.get(ADMIN, small),
        "projects, a page with a cursor": lambda: projects.list_visible(ADMIN, 100, encode_cursor(FLEET.project(500))),
        "a member's project": lambda: projects.list_visible(member, 100, None),
        "RBD image by project and name": lambda: volumes.get(ADMIN, RBD, small, names["rbd"]),
        "CephFS path by project and name": lambda: volumes.get(ADMIN, CEPHFS, small, names["cephfs"]),
        "a project's RBD images, first page": lambda: volumes.list_page(ADMIN, RBD, big, 1000, None),
        "a project's RBD images, with a cursor": lambda: volumes.list_page(ADMIN, RBD, big, 100, rbd_cursor),
        "a project's CephFS paths, with a cursor": lambda: volumes.list_page(ADMIN, CEPHFS, big, 100, cephfs_cursor),
        "a project's trash": lambda: volumes.list_page(ADMIN, RBD, big, 100, None, trashed=True),
        "every volume, first page": lambda: volumes.list_across(ADMIN, None, 1000, None),
        "every volume, with a cursor": lambda: volumes.list_across(ADMIN, None, 1000, across_cursor),
        "a member's volumes": lambda: volumes.list_across(member, None, 1000, None),
        "a project's usage (quota, provisioned, cached figures)": lambda: volumes.project_usage(ADMIN, small),
        "the clones and gateway activation of a volume (delete's check)": clones_check,
        "a subvolume's name held in the trash (a subvolume create's check)": trashed_subvolume_check,
        "snapshot by name": lambda: snapshots.get(ADMIN, RBD, big, image, snapshot),
        "a volume's snapshots": lambda: snapshots.list_page(ADMIN, RBD, big, image, 100, None),
        "every snapshot, with a cursor": lambda: snapshots.list_across(ADMIN, {"limit": 1000,
                                                                              "cursor": snapshots_cursor}),
        "a project's snapshots of a name (the CSI name check)": lambda: snapshots.list_across(
            ADMIN, {"limit": 1000, "project": big, "name": [snapshot], "state": "available"}),
        "a member's snapshots": lambda: snapshots.list_across(member, {"limit": 1000}),
        "a project's migration records": lambda: migration_records.history(ADMIN, small, {"limit": 100,
                                                                                         "cursor": None}),
        **audit_event_cases(member, names["rbd"], image_id, events_cursor, day),
    }


def audit_event_cases(member: Identity, volume: str, volume_id: str, cursor: str, hour: dict) -> dict:
    """GET /api/v2/audit/events: each filter alone, with a value most events have and with one few have."""
    common = {"actor": f"token:{FLEET.prefix}", "action": "rbd-images.post", "outcome": "success"}
    rare = {"actor": "token:1:nobody", "action": "DELETE /api/v2/clusters/<name>", "outcome": "failure"}
    cases = {
        "audit events, with a cursor": lambda: events.page(ADMIN, {}, 100, cursor),
        "a member's audit events": lambda: events.page(member, {}, 100, None),
        "audit events of a project": lambda: events.page(ADMIN, {"project": FLEET.big_project}, 100, None),
        "audit events of an hour": lambda: events.page(ADMIN, hour, 100, None),
        "audit events since an hour": lambda: events.page(ADMIN, {"since": hour["since"]}, 100, None),
        "audit events of a volume's name": lambda: events.page(ADMIN, {"target": volume}, 100, None),
        "audit events of a volume's id": lambda: events.page(ADMIN, {"target": volume_id}, 100, None),
    }
    for column in common:
        for kind, values in (("a common", common), ("a rare", rare)):
            filters = {column: values[column]}
            cases[f"audit events of {kind} {column}"] = lambda filters=filters: events.page(ADMIN, filters, 100, None)
    return cases


def test_request_path_queries_use_indexes(fleet_url):
    tables = big_tables()
    assert {"rbd_images", "cephfs_paths", "snapshots", "volume_usage", "audit_events", "api_tokens"} <= tables
    problems = []
    for case, call in cases(addresses()).items():
        with captured() as sent:
            call()
        assert sent, f"{case}: no statement was sent"
        for statement, parameters in sent:
            scanned = seq_scans(explained(statement, parameters), tables)
            if scanned:
                problems.append(f"{case}: Seq Scan on {scanned}\n{statement}\n"
                                f"{explained(statement, parameters, 'TEXT')}")
    assert not problems, "\n\n".join(problems)
