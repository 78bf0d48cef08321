"""One process at a time acts, among every process on one database: the leader of the maintenance loop, the
gateway agent that mounts. A PostgreSQL advisory lock held by a connection of the holder's own for its life (a
killed holder's session ends, and the lock with it), or on SQLite, which lives on one host, an flock on a file
beside the database (the kernel drops it when the process dies). Each user has a key and a file of its own, so
they never wait for each other.
"""
from __future__ import annotations

import fcntl
import logging
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from robin.db import db

log = logging.getLogger(__name__)

# How long the leader waits for its lock's session to answer before it steps down.
SESSION_CHECK_TIMEOUT_S = 5.0


class Leadership:
    """The lock named `name`: PostgreSQL advisory lock `key`, or on SQLite `<database>.<name>.lock`."""

    def __init__(self, database_url: str, name: str, key: int, check_timeout: float = SESSION_CHECK_TIMEOUT_S):
        self._url = make_url(database_url)
        self.name, self._key = name, key
        self._check_timeout = check_timeout
        self._held: _FileLock | _SessionLock | None = None

    def acquire(self) -> bool:
        """Non-blocking. Once held, the lock is checked on every call: a lock whose database session
        was lost (or does not answer in time) is given up, and taken again only if it is free, so two
        workers never both think they lead."""
        if self._held is not None and not self._held.alive(self._check_timeout):
            log.warning("%s lock lost with its database session: stepping down", self.name)
            self._held = None
        if self._held is None:
            self._held = self._try_sqlite() if self._url.get_backend_name() == "sqlite" else self._try_postgres()
        return self._held is not None

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    def _try_sqlite(self) -> _FileLock | None:
        handle = open(Path(self._url.database).with_suffix(f".{self.name}.lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return _FileLock(handle)

    def _try_postgres(self) -> _SessionLock | None:
        connection = db.engine.connect()
        try:
            taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar()
            connection.commit()
        except SQLAlchemyError:
            connection.invalidate()  # its session may hold the lock after all: never back to the pool
            connection.close()
            raise
        if taken:
            return _SessionLock(connection, self._key, self.name)
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

    def __init__(self, connection, key: int, name: str):
        self._connection, self._key, self._name = connection, key, name
        self._lock = threading.Lock()
        self._abandoned = False

    def alive(self, timeout: float) -> bool:
        """Whether the session answers within `timeout`. A session that does not is abandoned: the
        check's thread closes it when (if ever) the query returns, which frees the lock server-side."""
        answered, outcome = threading.Event(), []
        threading.Thread(target=self._ping, args=(answered, outcome), name=f"robin-{self._name}-lock-check",
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
        self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
        self._connection.commit()
        self._connection.close()
