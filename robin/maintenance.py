"""The background loop of `robin serve`: purge what the trash has due, reconcile, re-measure stale usage.

Every gunicorn worker runs the loop, but only the one holding the maintenance lock acts: a
PostgreSQL advisory lock (held by a connection of its own for the life of the worker), or on
SQLite, which lives on one host, an flock on a file beside the database.
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

from robin.db import db
from robin.errors import RobinError

log = logging.getLogger(__name__)
ADVISORY_LOCK_KEY = 0x726F62696E  # "robin"
RECONCILE_OLDER_THAN = timedelta(minutes=5)


class Leadership:
    def __init__(self, database_url: str):
        self._url = make_url(database_url)
        self._held = None

    def acquire(self) -> bool:
        """Non-blocking; once held, held until the process ends."""
        if self._held is None:
            self._held = self._try_sqlite() if self._url.get_backend_name() == "sqlite" else self._try_postgres()
        return self._held is not None

    def release(self) -> None:
        if self._held is not None:
            self._held()
            self._held = None

    def _try_sqlite(self):
        handle = open(Path(self._url.database).with_suffix(".maintenance.lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle.close  # closing the file drops the lock

    def _try_postgres(self):
        connection = db.engine.connect()
        if connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar():
            connection.commit()
            return lambda: self._unlock_postgres(connection)
        connection.close()
        return None

    @staticmethod
    def _unlock_postgres(connection) -> None:
        # Explicitly: closing only returns the session, lock and all, to the pool.
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
        connection.commit()
        connection.close()


def run_once(app: Flask) -> None:
    from robin.audit import usage
    from robin.reconcile.service import reconcile
    from robin.volumes.service import purge_due

    with app.app_context():
        purged = purge_due()
        report = reconcile(RECONCILE_OLDER_THAN)
        # Only figures older than usage.MAX_AGE (and new volumes): a round stays short.
        measured = usage.refresh(stale_after=usage.MAX_AGE)
    log.info("maintenance round", extra={**purged, "fixed": len(report.fixed), "drift": len(report.drift),
                                         "errors": len(report.errors), "usage_measured": measured.measured})


def _loop(app: Flask, interval: float, stop: threading.Event) -> None:
    leadership = Leadership(app.config["ROBIN_SETTINGS"].database_url)
    # Jitter, so that workers started together do not all knock at once.
    while not stop.wait(interval * random.uniform(0.8, 1.2)):
        try:
            if leadership.acquire():
                run_once(app)
        except (RobinError, OSError, SQLAlchemyError) as exc:
            log.warning("maintenance round failed", extra={"error": str(exc)})


def start(app: Flask) -> threading.Event | None:
    """Start the loop in a daemon thread (gunicorn's post_worker_init); return its stop event."""
    interval = app.config["ROBIN_SETTINGS"].maintenance_interval
    if interval <= 0:
        return None
    stop = threading.Event()
    threading.Thread(target=_loop, args=(app, interval, stop), name="robin-maintenance", daemon=True).start()
    return stop
