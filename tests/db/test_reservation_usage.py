"""A quota reservation reads what a project's live volumes hold from an index alone, on each backend.

Every create, resize, clone, restore and snapshot sums its project's live volumes under the project's lock (SQLite:
the database's one write lock), so that sum must not visit the volumes' rows: the big project here has 3,000
volumes, some in the trash or deleted, and the plan must name the usage indexes as the only thing it reads. The
sums themselves are checked against the rows, counted here in Python.
"""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, event, select

from robin.db import normalize_url, upgrade
from robin.projects.models import Project
from robin.projects.service import provisioned
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.support.synthetic import Fleet, populate

FLEET = Fleet(projects=4, volumes=4000, big_project_volumes=3000, snapshots=500, tokens=1, audit_events=1,
              prefix="usage")
USAGE_INDEXES = {"rbd_images": "ix_rbd_images_live_usage", "cephfs_paths": "ix_cephfs_paths_live_usage"}


@pytest.fixture(scope="module")
def fleet(backend, request, tmp_path_factory):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('usage') / 'robin.db'}"
    else:
        server = request.getfixturevalue("postgres")
        if isinstance(server, str):
            pytest.skip("ROBIN_TEST_POSTGRES_URL names one database; this test needs to make its own")
        url = server.create_database("robin_usage_" + uuid.uuid4().hex[:12])
    upgrade(url)
    engine = create_engine(normalize_url(url))
    try:
        populate(engine, FLEET)
        if backend != "sqlite":
            # Statistics, and the visibility map without which PostgreSQL's planner never reads an index alone.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE")
        with engine.connect() as connection:
            project_id = connection.scalar(select(Project.id).where(Project.name == FLEET.big_project))
        yield engine, project_id
    finally:
        engine.dispose()


def _sent_by_provisioned(engine, project_id: int) -> tuple[str, object]:
    sent = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as connection:
            provisioned(connection, project_id)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    [(statement, parameters)] = sent
    return statement, parameters


def _plan(engine, statement: str, parameters) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            return "\n".join(row[-1] for row in rows)
        return "\n".join(connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())


def test_the_reservation_reads_only_the_usage_indexes(fleet):
    engine, project_id = fleet
    plan = _plan(engine, *_sent_by_provisioned(engine, project_id))
    for table, index in USAGE_INDEXES.items():
        if engine.dialect.name == "sqlite":
            reads = [line for line in plan.splitlines() if f" {table} " in f"{line} "]
            assert reads and all(f"USING COVERING INDEX {index} " in f"{line} " for line in reads), plan
        else:
            assert f"Index Only Scan using {index} on {table}" in plan, plan
            assert f"Scan on {table}" not in plan.replace(f"Index Only Scan using {index} on {table}", ""), plan


def test_the_reservation_sums_what_the_live_rows_hold(fleet):
    engine, project_id = fleet
    bytes_held = volumes = 0
    with engine.connect() as connection:
        for model in (RbdImage, CephfsPath):
            for size, target in connection.execute(select(model.size_bytes, model.target_size_bytes).where(
                    model.project_id == project_id, model.state != VolumeState.DELETED)):
                bytes_held, volumes = bytes_held + max(size, target or 0), volumes + 1
        snapshots = len(connection.execute(select(Snapshot.id).where(
            Snapshot.project_id == project_id, Snapshot.state != SnapshotState.DELETED)).all())
        used = provisioned(connection, project_id)
    assert volumes > 2000  # the big project, less what is in the trash or deleted
    assert (used.bytes, used.volumes, used.snapshots) == (bytes_held, volumes, snapshots)
