"""Only one worker at a time runs the maintenance loop, on either database, and a leader whose
database session is lost or hangs steps down."""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

from robin.db import normalize_url
from robin.maintenance import ADVISORY_LOCK_KEY, maintenance_lock
from tests.support.net import wait_until

CHECK_TIMEOUT_S = 2.0


def test_one_leader_at_a_time(app, database_url):
    first, second = maintenance_lock(database_url), maintenance_lock(database_url)
    try:
        assert first.acquire() is True
        assert second.acquire() is False
        assert first.acquire() is True  # kept once held
        first.release()
        assert second.acquire() is True
    finally:
        first.release()
        second.release()


@contextmanager
def admin_session(database_url):
    """A connection of the test's own, to see and act on the leader's session from outside."""
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def lock_holder_pid(connection) -> int | None:
    """The backend holding robin's maintenance lock, from the server's lock table (a bigint key is
    shown split in two 32-bit halves)."""
    pid = connection.execute(text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = :low AND classid = :high"),
        {"low": ADVISORY_LOCK_KEY & 0xFFFFFFFF, "high": ADVISORY_LOCK_KEY >> 32}).scalar()
    connection.rollback()  # a fresh snapshot for the next look
    return pid


def test_leader_steps_down_when_its_database_session_is_lost(app, database_url, backend):
    if backend != "postgresql":
        pytest.skip("an flock on SQLite's host has no session that could be lost")
    first, second, third = (maintenance_lock(database_url, check_timeout=CHECK_TIMEOUT_S) for _ in range(3))
    stopped = None
    try:
        with admin_session(database_url) as admin:
            assert first.acquire() is True
            # The server ends the leader's session (a restart, a network cut, an admin's terminate).
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lock_holder_pid(admin)})
            admin.commit()
            assert second.acquire() is True  # the lock went with the session
            assert first.acquire() is False  # so the old leader steps down: never two leaders

            # The leader's backend hangs (SIGSTOP): the check gives up in time, and nobody leads until it
            # answers again; then the abandoned session is closed, which frees the lock.
            frozen = stopped = lock_holder_pid(admin)
            os.kill(stopped, signal.SIGSTOP)
            started = time.monotonic()
            assert second.acquire() is False
            assert time.monotonic() - started < CHECK_TIMEOUT_S + 2
            assert third.acquire() is False  # the frozen session still holds the lock server-side
            os.kill(stopped, signal.SIGCONT)
            stopped = None
            wait_until(third.acquire, 15, "the lock freed by the abandoned session", interval=0.2)
            assert lock_holder_pid(admin) not in (None, frozen)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        for leadership in (first, second, third):
            leadership.release()


def test_the_leaders_session_holds_its_lock_outside_any_transaction(app, database_url, backend):
    """robin's sessions are ended by the server when idle in a transaction (robin.db): the leader's, which holds the
    lock for as long as it leads, must never be, or the server would end its leadership a minute in."""
    if backend != "postgresql":
        pytest.skip("an flock on SQLite's host has no session")
    leader = maintenance_lock(database_url)
    try:
        with admin_session(database_url) as admin:
            for _ in range(2):  # taken, then kept (the check of its session runs a statement)
                assert leader.acquire() is True
                state = admin.execute(text("SELECT state FROM pg_stat_activity WHERE pid = :pid"),
                                      {"pid": lock_holder_pid(admin)}).scalar()
                admin.rollback()
                assert state == "idle"
    finally:
        leader.release()
