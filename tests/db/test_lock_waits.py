"""A lock another client holds and does not let go (a session that died mid-transaction, an operator's psql) costs
robin's writers of that project one lock timeout each, answered 503 database_busy with nothing left behind, never
a worker thread for good; every other project, and reads, go on meanwhile.

The holder is another connection's transaction: on PostgreSQL holding the project's quota row FOR UPDATE (the lock
every write of a project's volumes takes first, before any Ceph call), on SQLite the database's write lock.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import rbd
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from robin import db as robin_db
from robin.db import Database, db, normalize_url, pool_size_for
from robin.snapshots.models import Snapshot
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique
from tests.support.net import wait_until

pytestmark = pytest.mark.integration
MiB = 2**20
# Short, so that each refused request is quick; no assertion depends on it.
LOWERED_LOCK_TIMEOUT_S = 1.0
IDLE_LOCK_KEY = 0x6964_6C65  # "idle": an advisory lock of the idle-transaction test's own


@pytest.fixture
def lowered_lock_timeout(app, settings):
    """robin's database, as the app has it, with a short lock timeout for the test's length."""
    pool_size = pool_size_for(settings.threads)
    db.configure(settings.database_url, pool_size=pool_size, lock_timeout=LOWERED_LOCK_TIMEOUT_S)
    try:
        yield
    finally:
        db.configure(settings.database_url, pool_size=pool_size, lock_timeout=settings.database_lock_timeout)


@contextmanager
def project_locked(backend: str, database_url: str, project: str):
    """Another client's transaction holds `project`'s quota row (PostgreSQL) or the database's write lock (SQLite)
    until the block ends, then rolls back."""
    if backend == "sqlite":
        holder = sqlite3.connect(make_url(database_url).database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        return
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as holder:
            locked = holder.execute(text("SELECT q.project_id FROM quotas q JOIN projects p ON p.id = q.project_id "
                                         "WHERE p.name = :name FOR UPDATE OF q"), {"name": project}).all()
            assert len(locked) == 1
            yield
            holder.rollback()
    finally:
        engine.dispose()


@contextmanager
def invalidations():
    """The connections of robin's pool invalidated meanwhile (what a disconnect does to the pool)."""
    seen = []
    engine = db.engine

    def record(_dbapi_connection, _record, exception):
        seen.append(exception)

    event.listen(engine, "invalidate", record)
    try:
        yield seen
    finally:
        event.remove(engine, "invalidate", record)


def images(project: str) -> str:
    return f"/api/v2/projects/{project}/rbd-images"


def image_row(name: str) -> RbdImage | None:
    with db.reading() as session:
        return session.scalar(select(RbdImage).where(RbdImage.name == name, RbdImage.state != VolumeState.DELETED))


def snapshot_names(name: str) -> list[str]:
    with db.reading() as session:
        return list(session.scalars(select(Snapshot.name).join(RbdImage, Snapshot.rbd_image_id == RbdImage.id)
                                    .where(RbdImage.name == name)))


def ceph_size(ioctx, name: str) -> int | None:
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return image.size()
    except rbd.ImageNotFound:
        return None


def ceph_snapshots(ioctx, name: str) -> list[str]:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return [snap["name"] for snap in image.list_snaps()]


def provisioned(admin, project: str) -> int:
    """The bytes of the project's quota its live rows hold."""
    return admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"]


@dataclass
class Write:
    """A write to a project's image, made ready before the lock is taken: `send` it; `unchanged` is whether the
    database and Ceph are as they were before it; `expected` its success status."""

    send: Callable
    unchanged: Callable[[], bool]
    expected: int


def _create(admin, project, ioctx) -> Write:
    name = unique("img")
    return Write(lambda: admin.post(images(project), json={"name": name, "size_bytes": MiB}),
                 lambda: image_row(name) is None and ceph_size(ioctx, name) is None, 201)


def _made(admin, project) -> str:
    name = unique("img")
    assert admin.post(images(project), json={"name": name, "size_bytes": MiB}).status_code == 201
    return name


def _resize(admin, project, ioctx) -> Write:
    name = _made(admin, project)
    return Write(lambda: admin.patch(f"{images(project)}/{name}", json={"size_bytes": 2 * MiB}),
                 lambda: image_row(name).size_bytes == MiB and image_row(name).state is VolumeState.AVAILABLE
                 and ceph_size(ioctx, name) == MiB, 200)


def _snapshot(admin, project, ioctx) -> Write:
    name = _made(admin, project)
    return Write(lambda: admin.post(f"{images(project)}/{name}/snapshots", json={"name": "s"}),
                 lambda: snapshot_names(name) == [] and ceph_snapshots(ioctx, name) == [], 201)


def _clone(admin, project, ioctx) -> Write:
    parent, child = _made(admin, project), unique("clone")
    assert admin.post(f"{images(project)}/{parent}/snapshots", json={"name": "s"}).status_code == 201
    return Write(lambda: admin.post(images(project), json={"name": child, "source": {"image": parent,
                                                                                      "snapshot": "s"}}),
                 lambda: image_row(child) is None and ceph_size(ioctx, child) is None, 201)


def _delete(admin, project, ioctx) -> Write:
    name = _made(admin, project)
    return Write(lambda: admin.delete(f"{images(project)}/{name}"),
                 lambda: image_row(name) is not None and image_row(name).state is VolumeState.AVAILABLE
                 and ceph_size(ioctx, name) == MiB, 204)


WRITES = {"create": _create, "resize": _resize, "snapshot": _snapshot, "clone": _clone, "delete": _delete}


@pytest.mark.parametrize("operation", WRITES)
def test_a_write_waiting_for_a_held_project_lock_answers_503_database_busy_and_changes_nothing(
        operation, admin, new_project, backend, database_url, rbd_ioctx, lowered_lock_timeout):
    project = new_project()
    write = WRITES[operation](admin, project, rbd_ioctx)
    provisioned_before = provisioned(admin, project)
    with invalidations() as invalidated, project_locked(backend, database_url, project):
        refused = write.send()
        assert refused.status_code == 503, refused.json
        assert refused.json["error"]["code"] == "database_busy"
        assert refused.json["error"]["details"] == {"project": project, "lock_timeout_seconds": LOWERED_LOCK_TIMEOUT_S}
        assert project in refused.json["error"]["message"]
        assert refused.headers["Retry-After"] == "1"
        # Reads do not wait for the holder: the project's own answers meanwhile.
        assert admin.get(f"{images(project)}").status_code == 200
    assert invalidated == []  # the database answered: no connection of robin's pool was dropped
    assert write.unchanged()
    assert provisioned(admin, project) == provisioned_before
    done = write.send()  # once the holder let go, the same request goes through
    assert done.status_code == write.expected, done.json


def test_another_projects_create_goes_on_while_a_projects_lock_is_held(admin, new_project, backend, database_url,
                                                                       rbd_ioctx, lowered_lock_timeout):
    if backend == "sqlite":
        pytest.skip("SQLite's write lock is the whole database's: every project's writers wait for it")
    stuck, other = new_project(), new_project()
    name = unique("img")
    with project_locked(backend, database_url, stuck):
        refused = admin.post(images(stuck), json={"name": name, "size_bytes": MiB})
        created = admin.post(images(other), json={"name": name, "size_bytes": MiB})
        assert refused.status_code == 503 and refused.json["error"]["code"] == "database_busy", refused.json
        assert created.status_code == 201, created.json
    assert admin.get(f"{images(stuck)}/{name}").status_code == 404
    assert admin.get(f"{images(other)}/{name}").status_code == 200 and ceph_size(rbd_ioctx, name) == MiB


def test_robins_sessions_bound_their_lock_waits_and_idle_transactions(app, backend, database_url):
    if backend == "sqlite":
        pytest.skip("PostgreSQL's session settings")
    assert session_settings(db) == ("10s", "1min", "0")
    # Options the URL gives are kept beside robin's.
    given = make_url(database_url).update_query_dict({"options": "-c statement_timeout=12345"})
    own = Database()
    own.configure(given.render_as_string(hide_password=False), lock_timeout=2.5)
    try:
        assert session_settings(own) == ("2500ms", "1min", "12345ms")
    finally:
        own.dispose()


def session_settings(database: Database) -> tuple[str, str, str]:
    with database.engine.connect() as connection:
        return tuple(connection.execute(text(f"SHOW {name}")).scalar() for name in (
            "lock_timeout", "idle_in_transaction_session_timeout", "statement_timeout"))


def test_a_transaction_of_robins_left_idle_is_ended_by_the_server_with_its_locks(backend, database_url, monkeypatch):
    """A thread of robin's that stops mid-transaction (hung, or its node gone) holds its locks only until the
    server's idle-in-transaction timeout (here lowered to a second) ends its session."""
    if backend == "sqlite":
        pytest.skip("PostgreSQL's session settings")
    monkeypatch.setattr(robin_db, "POSTGRES_IDLE_IN_TRANSACTION_S", 1)
    own = Database()
    own.configure(database_url)
    watcher = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    try:
        with watcher.connect() as watching, pytest.raises(DBAPIError) as ended:
            with own.unit_of_work() as session:
                pid = session.scalar(text("SELECT pg_backend_pid()"))
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": IDLE_LOCK_KEY})
                wait_until(lambda: not watching.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                                       {"pid": pid}), 60, "the server's end of the idle session")
                assert watching.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": IDLE_LOCK_KEY})
                watching.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": IDLE_LOCK_KEY})
                session.execute(text("SELECT 1"))
        # A session lost, as to a disconnect (PostgreSQL says so with an InternalError): the pool drops the
        # connection, and robin answers 503 database_unavailable, not database_busy.
        assert ended.value.connection_invalidated and not robin_db.is_lock_timeout(ended.value)
    finally:
        own.dispose()
        watcher.dispose()
