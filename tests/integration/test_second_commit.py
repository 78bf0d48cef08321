"""A write's second commit (after its Ceph call): the row's move and its audit row's final status commit together or
not at all. On PostgreSQL they go to the server with BEGIN and COMMIT in one pipeline, one round trip: a lost race
(the row moved by another writer meanwhile) is a 409 state_changed that writes neither, and a statement that fails
rolls back both and leaves the pooled connection fit for the next request. SQLite's runs on the driver's own
connection (db.Direct), with the same outcomes."""
from __future__ import annotations

from contextlib import nullcontext

import pytest
from sqlalchemy import create_engine, select, text

from robin.audit.models import AuditEvent
from robin.db import db, normalize_url
from robin.volumes import service as volumes
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique
from tests.support.pg_proxy import proxied

pytestmark = pytest.mark.integration
GiB = 2**30


@pytest.fixture()
def other_writer(database_url):
    """A connection of another process's, to move rows behind robin's back (autocommit)."""
    engine = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        yield connection
    engine.dispose()


class SecondCommits:
    """The outcomes of db.compare_and_set (the second commits) once watched, each with what `look()` saw right after
    it and, with a proxy in front of the database, its round trips."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.look = None
        self.proxy = None

    def watch(self, look, proxy=None) -> None:
        self.look, self.proxy = look, proxy

    def spying_on(self, original):
        def spy(statement, parameters):
            if self.look is None:
                return original(statement, parameters)
            before = self.proxy.round_trips if self.proxy else None
            seen = {}
            try:
                seen["moved"] = original(statement, parameters)
            except Exception as exc:
                seen["raised"] = exc
                raise
            finally:
                seen["saw"] = self.look()
                if self.proxy:
                    seen["round_trips"] = self.proxy.round_trips - before
                self.seen.append(seen)
            return seen["moved"]
        return spy


@pytest.fixture()
def second_commits(monkeypatch) -> SecondCommits:
    spied = SecondCommits()
    monkeypatch.setattr(db, "compare_and_set", spied.spying_on(db.compare_and_set))
    return spied


def image_row(other_writer, name: str):
    return other_writer.execute(select(RbdImage.state, RbdImage.size_bytes, RbdImage.target_size_bytes)
                                .where(RbdImage.name == name)).one()


def audit_row(other_writer, project: str):
    return other_writer.execute(select(AuditEvent.status_code, AuditEvent.outcome, AuditEvent.error_code)
                                .where(AuditEvent.project == project).order_by(AuditEvent.id.desc())).first()


def test_a_create_moves_its_row_and_finishes_its_audit_row_in_one_commit(admin, new_project, other_writer, backend,
                                                                       database_url, rebind_db, second_commits):
    project, name = new_project(), unique("img")
    with proxied(database_url) if backend == "postgresql" else nullcontext((None, None)) as (proxy, url):
        if proxy is not None:
            rebind_db(url)
        second_commits.watch(lambda: (image_row(other_writer, name).state, audit_row(other_writer, project)), proxy)
        response = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": GiB})
    assert response.status_code == 201, response.json
    # Right after the second commit, before the response: both written.
    (seen,) = second_commits.seen
    assert (seen["moved"], seen["saw"]) == (True, (VolumeState.AVAILABLE, (201, "success", None)))
    if backend == "postgresql":
        assert seen["round_trips"] == 1  # BEGIN, both UPDATEs and COMMIT in one pipeline


def test_a_lost_race_in_the_second_commit_writes_neither_the_row_nor_the_audit_status(
        admin, new_project, other_writer, monkeypatch, second_commits):
    project, name = new_project(), unique("img")
    images = f"/api/v2/projects/{project}/rbd-images"
    assert admin.post(images, json={"name": name, "size_bytes": GiB}).status_code == 201

    def another_writer_moves_the_row(point: str) -> None:
        if point == "volume.resize":  # after the Ceph call, before the second commit
            other_writer.execute(text("UPDATE rbd_images SET state = 'error' WHERE name = :name"), {"name": name})

    monkeypatch.setattr(volumes, "crash_point", another_writer_moves_the_row)
    second_commits.watch(lambda: (image_row(other_writer, name), audit_row(other_writer, project)))
    response = admin.patch(f"{images}/{name}", json={"size_bytes": 2 * GiB})
    assert (response.status_code, response.json["error"]["code"]) == (409, "state_changed")
    # Right after the second commit: the other writer's row, and the request's audit row still pending.
    assert second_commits.seen == [{"moved": False, "saw": ((VolumeState.ERROR, GiB, 2 * GiB), (0, "pending", None))}]
    assert audit_row(other_writer, project) == (409, "failure", "state_changed")  # written after the response


def test_a_failing_statement_rolls_back_the_whole_second_commit_and_the_connection_serves_on(
        admin, new_project, other_writer, backend, database_url, monkeypatch, rebind_db, second_commits):
    rebind_db(database_url, 1)  # one pooled connection: the next request runs on the one that failed
    project, name = new_project(), unique("img")
    images = f"/api/v2/projects/{project}/rbd-images"
    assert admin.post(images, json={"name": name, "size_bytes": GiB}).status_code == 201
    server_process = backend_pid() if backend == "postgresql" else None

    # PostgreSQL's second commit is one pipeline, SQLite's runs on the driver's connection (db.Direct): either way the
    # audit row's 200, its second statement, is refused (SQLite has no ALTER TABLE ... ADD CONSTRAINT: a trigger).
    refuse, allow = (
        ("CREATE TRIGGER robin_test_no_200 BEFORE UPDATE ON audit_events WHEN NEW.status_code = 200 "
         "BEGIN SELECT RAISE(ABORT, 'robin_test_no_200'); END", "DROP TRIGGER IF EXISTS robin_test_no_200")
        if backend == "sqlite" else
        ("ALTER TABLE audit_events ADD CONSTRAINT robin_test_no_200 CHECK (status_code <> 200) NOT VALID",
         "ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS robin_test_no_200"))

    def the_audit_status_will_fail(point: str) -> None:
        if point == "volume.resize":
            other_writer.execute(text(refuse))

    monkeypatch.setattr(volumes, "crash_point", the_audit_status_will_fail)
    second_commits.watch(lambda: (image_row(other_writer, name), audit_row(other_writer, project)))
    try:
        response = admin.patch(f"{images}/{name}", json={"size_bytes": 2 * GiB})
    finally:
        other_writer.execute(text(allow))
    assert (response.status_code, response.json["error"]["code"]) == (500, "internal_error")
    # The row's move rolled back with the audit status: still resizing (the reconciler's to finish), still pending.
    (seen,) = second_commits.seen
    assert ("robin_test_no_200" if backend == "sqlite" else "CheckViolation") in repr(seen["raised"])
    assert seen["saw"] == ((VolumeState.RESIZING, GiB, 2 * GiB), (0, "pending", None))
    # The same pooled connection serves the next request, a write with its own two commits.
    other = unique("img")
    assert admin.post(images, json={"name": other, "size_bytes": GiB}).status_code == 201
    assert image_row(other_writer, other).state is VolumeState.AVAILABLE
    if server_process is not None:
        assert backend_pid() == server_process


def backend_pid() -> int:
    with db.read_connection() as connection:
        return connection.scalar(text("SELECT pg_backend_pid()"))

