"""The gateway agent's lock: one agent acts at a time, since an RBD image mounted twice corrupts its file system.

As robin.maintenance's leadership: on PostgreSQL an advisory lock held by a connection of the agent's own for
its life (a killed agent's session ends, and the lock with it); on SQLite, which lives on one host, an flock on a
file beside the database (the kernel drops it when the process dies). A key and a file of the gateway's own, so
the agent and `robin serve`'s maintenance never wait for each other.
"""
from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from robin.db import db

log = logging.getLogger(__name__)
ADVISORY_LOCK_KEY = 0x726F62696E67  # "robing": robin's gateway


class AgentLock:
    def __init__(self, database_url: str):
        self._url = make_url(database_url)
        self._file = None
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        """Non-blocking; True while held. A held PostgreSQL lock is checked on every call: one whose session
        was lost is given up (another agent may hold it by now) and taken again only if it is free."""
        if self._connection is not None and not self._alive():
            log.warning("gateway agent lock lost with its database session: no longer acting")
            self._discard()
        if self._file is None and self._connection is None:
            self._try_sqlite() if self._url.get_backend_name() == "sqlite" else self._try_postgres()
        return self._file is not None or self._connection is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                self._connection.commit()
                self._connection.close()
            except SQLAlchemyError:
                self._discard()
            self._connection = None

    def _try_sqlite(self) -> None:
        handle = open(Path(self._url.database).with_suffix(".gateway.lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return
        self._file = handle

    def _try_postgres(self) -> None:
        connection = db.engine.connect()
        try:
            taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
            connection.commit()
        except SQLAlchemyError:
            connection.invalidate()
            connection.close()
            raise
        if taken:
            self._connection = connection
        else:
            connection.close()

    def _alive(self) -> bool:
        try:
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            return True
        except SQLAlchemyError:
            return False

    def _discard(self) -> None:
        try:
            self._connection.invalidate()  # never back to the pool: its session may still hold the lock
            self._connection.close()
        except SQLAlchemyError:
            pass  # the session is gone either way
        self._connection = None
