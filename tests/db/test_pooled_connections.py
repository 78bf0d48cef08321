"""PostgreSQL connections wait in robin's pool between requests. One that sat idle is pinged before a request
uses it, so one the server closed meanwhile (a restart, a failover, a proxy's idle timeout) is replaced unnoticed;
one back from a request moments ago is used without that round trip, and should it have died, its one request
fails and the next ones reconnect."""
from __future__ import annotations

import dataclasses
from contextlib import ExitStack

import pytest
from sqlalchemy import bindparam, create_engine, event, insert, text, update
from sqlalchemy.exc import OperationalError

from robin import db as robin_db
from robin.audit.models import AuditEvent
from robin.db import Database, normalize_url, utcnow
from tests.support.net import wait_until


@pytest.fixture
def pooled(backend, database_url, monkeypatch):
    """pooled(idle_ping_s) -> a Database of its own on the session's PostgreSQL database, pinging connections idle
    that long."""
    if backend == "sqlite":
        pytest.skip("a SQLite connection is a file's: nothing closes it while it waits")
    made: list[Database] = []

    def make(idle_ping_s: float) -> Database:
        monkeypatch.setattr(robin_db, "POSTGRES_IDLE_PING_S", idle_ping_s)
        database = Database()
        database.configure(database_url)
        made.append(database)
        return database

    yield make
    for database in made:
        database.dispose()


@pytest.fixture
def terminate(database_url):
    """terminate(pid): end that server process as a restart would, from a connection of its own."""
    engine = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")

    def kill(pid: int) -> None:
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            wait_until(lambda: not connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}), 10, "the backend's end")

    yield kill
    engine.dispose()


def backend_pid(database: Database) -> int:
    with database.reading() as session:
        return session.scalar(text("SELECT pg_backend_pid()"))


def test_an_idle_connection_the_server_closed_is_replaced_before_a_request_uses_it(pooled, terminate):
    database = pooled(0.0)  # every pooled connection counts as idle: each checkout pings
    first = backend_pid(database)
    terminate(first)
    second = backend_pid(database)  # no error: the ping found it closed and the pool connected anew
    assert second != first
    assert backend_pid(database) == second  # the new connection is pooled in turn


def test_a_connection_back_from_a_request_moments_ago_is_used_without_a_ping(pooled, terminate):
    database = pooled(3600.0)
    first = backend_pid(database)
    terminate(first)
    # Not pinged, so the request meets the closed connection: this is the round trip a ping would have cost.
    with pytest.raises(OperationalError):
        backend_pid(database)
    assert backend_pid(database) != first  # the failure emptied the pool: the next request reconnects


def test_a_one_round_trip_second_commit_on_a_connection_the_server_closed_fails_once_and_empties_the_pool(
        pooled, terminate):
    """db.compare_and_set sends its transaction on psycopg's connection itself (a pipeline): a closed connection
    fails its one request, with the error SQLAlchemy gives, and the pool is emptied as after a statement of its own."""
    database = pooled(3600.0)
    with database.writing() as connection:
        row_id = connection.execute(insert(AuditEvent), {
            "at": utcnow(), "actor": "test", "action": "POST /test", "target": "/test", "outcome": "pending",
            "status_code": 0, "request_id": "", "details": {}}).inserted_primary_key[0]
    finish = (update(AuditEvent).where(AuditEvent.id == bindparam("row_id"), AuditEvent.outcome == "pending")
              .values(outcome="success"))
    first = backend_pid(database)
    terminate(first)
    with pytest.raises(OperationalError):
        database.compare_and_set(finish, {"row_id": row_id})
    assert backend_pid(database) != first
    assert database.compare_and_set(finish, {"row_id": row_id}) is True
    assert database.compare_and_set(finish, {"row_id": row_id}) is False  # moved already: nothing to move


def test_a_pool_as_large_as_the_threads_opens_no_connection_per_request(database_url):
    """Every thread of a server process holding a connection at once, round after round: the pool keeps them all,
    so no request pays for a new connection (on PostgreSQL a new server process)."""
    database = Database()
    database.configure(database_url, pool_size=8)
    opened: list[int] = []
    event.listen(database.engine, "connect", lambda *_: opened.append(1))
    try:
        for _ in range(3):
            with ExitStack() as held:
                for _ in range(8):
                    held.enter_context(database.read_connection()).execute(text("SELECT 1"))
        assert len(opened) == 8  # the first round's; the next two reused them
    finally:
        database.dispose()


def test_a_server_process_pools_a_connection_per_thread_and_two_for_maintenance(app, settings):
    from robin import create_app

    try:
        create_app(dataclasses.replace(settings, threads=3))
        assert robin_db.db.engine.pool.size() == 5
    finally:
        create_app(settings)  # robin's one database handle, back to the session's tests' pool
    assert robin_db.db.engine.pool.size() == settings.threads + 2


def test_a_core_read_on_postgresql_sends_no_begin_and_its_connection_writes_in_a_transaction_again(pooled):
    """READ COMMITTED gives every statement its own snapshot anyway: a read in autocommit reads the same without the
    BEGIN and COMMIT round trips. The pooled connection it used is transactional again for the next writer."""
    from psycopg.pq import TransactionStatus

    database = pooled(3600.0)
    for _ in range(2):
        with database.read_connection() as connection:
            connection.execute(text("SELECT 1"))
            assert connection.connection.dbapi_connection.info.transaction_status == TransactionStatus.IDLE
        with database.writing() as connection:
            connection.execute(text("SELECT 1"))
            assert connection.connection.dbapi_connection.info.transaction_status == TransactionStatus.INTRANS
