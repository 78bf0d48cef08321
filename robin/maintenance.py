"""The background loop of `robin serve`: probe the clusters, purge what the trash has due, reconcile,
re-measure stale usage, and survey the drift when the last survey is older than ROBIN_DRIFT_INTERVAL.
What it finds is stored for the metrics scrape, which never calls Ceph itself.

Every gunicorn worker runs the loop, but only the one holding the maintenance lock acts: a
PostgreSQL advisory lock (held by a connection of its own for the life of the worker), or on
SQLite, which lives on one host, an flock on a file beside the database. The gauge
robin_maintenance_leader says from outside which replica holds it.
"""
from __future__ import annotations

import fcntl
import logging
import random
import threading
from datetime import timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from robin.ceph import CephError
from robin.db import db
from robin.errors import RobinError
from robin.metrics import MAINTENANCE_LEADER

log = logging.getLogger(__name__)
ADVISORY_LOCK_KEY = 0x726F62696E  # "robin"
RECONCILE_OLDER_THAN = timedelta(minutes=5)


# How long the leader waits for its lock's session to answer before it steps down.
SESSION_CHECK_TIMEOUT_S = 5.0


class Leadership:
    def __init__(self, database_url: str, check_timeout: float = SESSION_CHECK_TIMEOUT_S):
        self._url = make_url(database_url)
        self._check_timeout = check_timeout
        self._held: _FileLock | _SessionLock | None = None

    def acquire(self) -> bool:
        """Non-blocking. Once held, the lock is checked on every call: a lock whose database session
        was lost (or does not answer in time) is given up, and taken again only if it is free, so two
        workers never both think they lead."""
        if self._held is not None and not self._held.alive(self._check_timeout):
            log.warning("maintenance lock lost with its database session: stepping down")
            self._held = None
        if self._held is None:
            self._held = self._try_sqlite() if self._url.get_backend_name() == "sqlite" else self._try_postgres()
        return self._held is not None

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    def _try_sqlite(self) -> _FileLock | None:
        handle = open(Path(self._url.database).with_suffix(".maintenance.lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return _FileLock(handle)

    @staticmethod
    def _try_postgres() -> _SessionLock | None:
        connection = db.engine.connect()
        if connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar():
            connection.commit()
            return _SessionLock(connection)
        connection.close()
        return None


class _FileLock:
    """An flock: held as long as the file is open, which nothing outside the process can end."""

    def __init__(self, handle):
        self._handle = handle

    def alive(self, _timeout: float) -> bool:
        return True

    def release(self) -> None:
        self._handle.close()  # closing the file drops the lock


class _SessionLock:
    """A PostgreSQL advisory lock, held as long as its session lives: a restarted server, a
    terminated backend or a broken connection ends it without a word to the holder."""

    def __init__(self, connection):
        self._connection = connection
        self._lock = threading.Lock()
        self._abandoned = False

    def alive(self, timeout: float) -> bool:
        """Whether the session answers within `timeout`. A session that does not is abandoned: the
        check's thread closes it when (if ever) the query returns, which frees the lock server-side."""
        answered, outcome = threading.Event(), []
        threading.Thread(target=self._ping, args=(answered, outcome), name="robin-maintenance-lock-check",
                         daemon=True).start()
        if not answered.wait(timeout):
            with self._lock:
                self._abandoned = not answered.is_set()
        return answered.is_set() and outcome == [True]

    def _ping(self, answered: threading.Event, outcome: list) -> None:
        try:
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            outcome.append(True)
        except SQLAlchemyError:
            outcome.append(False)
        with self._lock:
            answered.set()
            abandoned = self._abandoned
        if abandoned or outcome == [False]:
            self._discard()

    def _discard(self) -> None:
        try:
            self._connection.invalidate()  # never back to the pool: its session may still hold the lock
            self._connection.close()
        except SQLAlchemyError:
            pass  # the session is gone either way

    def release(self) -> None:
        # Explicitly: closing only returns the session, lock and all, to the pool.
        self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
        self._connection.commit()
        self._connection.close()


def run_once(app: Flask) -> None:
    from robin.audit import usage
    from robin.health import record_cluster_probes
    from robin.reconcile.service import reconcile
    from robin.volumes.service import purge_due

    with app.app_context():
        record_cluster_probes()  # first: a cluster that went down shows on /metrics within a round
        purged = purge_due()
        report = reconcile(RECONCILE_OLDER_THAN, survey_drift=False)
        # Only figures older than usage.MAX_AGE (and new volumes): a round stays short.
        measured = usage.refresh(stale_after=usage.MAX_AGE)
        surveyed = _survey_drift(app)
    log.info("maintenance round", extra={**purged, "fixed": len(report.fixed), "errors": len(report.errors),
                                         "usage_measured": measured.measured, **surveyed})


def _survey_drift(app: Flask) -> dict:
    """The drift survey on its own schedule (it opens every image of robin's pools); 0 turns it off."""
    from robin.audit import drift

    interval = app.config["ROBIN_SETTINGS"].drift_interval
    if interval <= 0:
        return {}
    survey = drift.survey_if_due(timedelta(seconds=interval))
    if survey is None:
        return {}
    return {"drift": len(survey.findings), "drift_errors": len(survey.errors)}


def _loop(app: Flask, interval: float, stop: threading.Event) -> None:
    leadership = Leadership(app.config["ROBIN_SETTINGS"].database_url)
    # Jitter, so that workers started together do not all knock at once.
    while not stop.wait(interval * random.uniform(0.8, 1.2)):
        try:
            _round(app, leadership)
        except (RobinError, CephError, OSError, SQLAlchemyError) as exc:
            log.warning("maintenance round failed", extra={"error": str(exc)})


def _round(app: Flask, leadership: Leadership) -> None:
    """Take (or keep) the lock, say on /metrics whether this worker holds it, and act only if it does."""
    leading = False
    try:
        leading = leadership.acquire()
    finally:
        MAINTENANCE_LEADER.set(1 if leading else 0)  # a failed attempt leads nothing
    if leading:
        run_once(app)


def start(app: Flask) -> threading.Event | None:
    """Start the loop in a daemon thread (gunicorn's post_worker_init); return its stop event."""
    interval = app.config["ROBIN_SETTINGS"].maintenance_interval
    if interval <= 0:
        return None
    stop = threading.Event()
    threading.Thread(target=_loop, args=(app, interval, stop), name="robin-maintenance", daemon=True).start()
    return stop
