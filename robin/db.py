"""Engine, sessions and the unit-of-work helper.

Services own transactions: `with db.unit_of_work() as session:` commits on success and rolls back
on any error; `db.reading()` is for transactions that only read, `db.read_connection()` for those that only read
with Core statements; `db.compare_and_set()` is a state machine's move in a transaction of its own (on PostgreSQL
one round trip: a psycopg pipeline).

On SQLite a unit of work starts with BEGIN IMMEDIATE: the write lock is taken before the first
read, so two quota reservations cannot both read the same usage, and a transaction never fails
half-way when it upgrades from reading to writing (SQLITE_BUSY, which the busy timeout cannot
cure). Writers wait for each other in a queue beside the database (WriteQueue) before they ask
SQLite. On PostgreSQL the services lock the project's quota row FOR UPDATE instead. Either way a statement waits
for another transaction's lock only up to the lock timeout (configure()), then fails (is_lock_timeout).
"""
from __future__ import annotations

import enum
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import psycopg
from sqlalchemy import Connection, DateTime, Engine, Enum, create_engine, event
from sqlalchemy.engine import Compiled, Dialect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator

from robin.config import DATABASE_LOCK_TIMEOUT_S

log = logging.getLogger(__name__)
# Every call that leaves the process has a deadline. libpq's own: a connect gives up after
# connect_timeout; on an open connection, data the server does not acknowledge within
# tcp_user_timeout (a cut network, a host gone) and an idle peer that fails the keepalives
# break the connection, so a request gets an error instead of a worker thread held for good.
POSTGRES_CONNECT_ARGS = {"connect_timeout": 5, "tcp_user_timeout": 15_000, "keepalives": 1,
                         "keepalives_idle": 15, "keepalives_interval": 5, "keepalives_count": 3}
# The server ends a session of robin's whose transaction sat this long between two statements, and its locks with
# it: a thread hung mid-transaction, or a process gone without a word (a node lost: the server would keep its
# backend until its keepalives notice, hours by Linux's default). robin's transactions never wait for Ceph or a
# client, only for their own Python between statements; the leader's advisory lock is held by a session outside
# any transaction (robin.leadership commits after each statement), which this never ends.
POSTGRES_IDLE_IN_TRANSACTION_S = 60
# SQLSTATE lock_not_available: a statement waited lock_timeout for a lock and gave up.
POSTGRES_LOCK_NOT_AVAILABLE = "55P03"
# A pooled PostgreSQL connection that sat idle this long is pinged (one round trip) before a request uses it: a
# database restart, a failover or a proxy's idle timeout ends connections that wait in the pool, and the ping
# replaces such a one unnoticed. One back from a request moments ago is used as it is: pinging every checkout
# cost a round trip per request under load. Should it have died meanwhile, its request fails (503,
# database_unavailable) and the pool drops every connection opened before, so the next requests reconnect.
POSTGRES_IDLE_PING_S = 5.0
# Connections a process keeps open in its pool, unless configure() is told otherwise (robin serve: one per request
# thread and one for the maintenance loop). A request that finds every pooled connection busy opens one more, which
# is closed, not pooled, when it is returned: on PostgreSQL a new server process each time (tens of ms, the tail of
# the reads under load when the pool was smaller than a worker's threads).
DEFAULT_POOL_SIZE = 5


def pool_size_for(threads: int) -> int:
    """The pool of a server process with `threads` request threads: one connection each, and two for the
    maintenance loop (the leader's lock holds a session for as long as it leads; its round uses another)."""
    return threads + 2
_PACKAGE_DIR = Path(__file__).resolve().parent
# Installed from the wheel, the migrations are robin/_migrations (setup.py maps the top-level migrations/ there). Run
# from a checkout (an editable install, or the checkout on PYTHONPATH), they are its migrations/, which `robin db
# revision` writes to. Both are looked up beside the robin that runs: it never reads another copy's migrations.
MIGRATIONS_DIR = _PACKAGE_DIR / "_migrations" if (_PACKAGE_DIR / "_migrations").is_dir() \
    else _PACKAGE_DIR.parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timestamps stored as UTC and always returned timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use robin.db.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


def string_enum(enum_class: type[enum.Enum], name: str) -> Enum:
    """An enum stored as its values in a VARCHAR with a CHECK constraint: portable between SQLite
    and PostgreSQL, and a new value is a migration of the constraint, not of a database type."""
    return Enum(enum_class, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
                create_constraint=True, name=name)


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver (or none) the URL names."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class WriteQueue:
    """SQLite's writers, of every process on the database's host, take turns here before BEGIN IMMEDIATE.

    Without it a writer that finds the write lock taken is left to SQLite's busy handler, which sleeps 1, 2, 5, 10
    ... up to 100 ms between retries whether or not the lock freed meanwhile: under 8 concurrent creates, the tail of
    the latencies (p99 20x the p50) and requests waiting while the database was idle. Here the threads of a process
    queue on a lock that wakes the next one the moment it is released, and one thread per process at a time waits
    for the other processes on an flock of `<database>.write.lock`, trying it every WAIT_STEP_S. SQLite's own lock
    still decides who writes: this only orders the asking. Waiting here is bounded by the busy timeout; past it a
    writer goes on to SQLite as before.
    """

    WAIT_STEP_S = 0.001

    def __init__(self, path: Path, timeout: float):
        self._path, self._timeout = path, timeout
        self._threads = threading.Lock()
        self._holder: int | None = None  # the thread ident that holds the queue
        self._file: tuple[int, int] | None = None  # (pid, descriptor): a forked worker opens its own

    def held_here(self) -> bool:
        return self._holder == threading.get_ident()

    def acquire(self) -> None:
        """Wait for this thread's turn (nothing when it has it already); give up waiting at the busy timeout."""
        if self.held_here():
            return
        deadline = time.monotonic() + self._timeout
        if not self._threads.acquire(timeout=self._timeout):
            log.warning("SQLite's write queue did not move within the busy timeout; asking SQLite directly")
            return
        try:
            while not self._try_flock():
                if time.monotonic() >= deadline:
                    log.warning("SQLite's write queue did not move within the busy timeout; asking SQLite directly")
                    self._threads.release()
                    return
                time.sleep(self.WAIT_STEP_S)
        except OSError as exc:  # the file cannot be opened (another user's, a read-only directory): SQLite alone
            log.warning("SQLite's write queue is not usable; asking SQLite directly",
                        extra={"path": str(self._path), "error": str(exc)})
            self._threads.release()
            return
        except BaseException:
            self._threads.release()
            raise
        self._holder = threading.get_ident()

    def release(self) -> None:
        """The end of this thread's write transaction: the next writer's turn."""
        if not self.held_here():
            return
        self._holder = None
        fcntl.flock(self._descriptor(), fcntl.LOCK_UN)
        self._threads.release()

    def _try_flock(self) -> bool:
        try:
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _descriptor(self) -> int:
        # Opened per process: a descriptor inherited across a fork shares its flock with the parent's. Read-only
        # (an flock needs no more), so that whoever may read the file may queue, whichever user made it.
        if self._file is None or self._file[0] != os.getpid():
            self._file = (os.getpid(), os.open(self._path, os.O_RDONLY | os.O_CREAT, 0o644))
        return self._file[1]

    def close(self) -> None:
        if self._file is not None and self._file[0] == os.getpid():
            os.close(self._file[1])
        self._file = None


def _write_queue_path(url: str) -> Path | None:
    """Beside a SQLite database file (leadership's locks are `<database>.<name>.lock` too); None in memory."""
    database = make_url(url).database
    return None if database in (None, "", ":memory:") else Path(database).with_suffix(".write.lock")


def _configure_sqlite(engine: Engine, queue: WriteQueue | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is
        # deferred, which is what would let two quota reservations race).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL: readers never wait for the writer. synchronous=NORMAL keeps the file consistent
        # on power loss; the last commits may be lost, which the reconciler tolerates.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        immediate = connection.get_execution_options().get("robin_write_lock", False)
        if immediate and queue is not None:
            queue.acquire()  # released by the Database method whose transaction this is, once it ended
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _ping_idle_connections(engine: Engine, idle_s: float) -> None:
    """Ping a connection on checkout only when it has been idle in the pool for idle_s or more."""
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        record.info["robin_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):
        idle_since = record.info.pop("robin_idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return  # just connected, or busy
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if not engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            alive = False
        if not alive:
            # The pool replaces this connection and checks out again (SQLAlchemy's documented way).
            raise DisconnectionError("the pooled connection was closed while it was idle")


def _keep_iso_dates(engine: Engine) -> None:
    """Every session in the ISO date style, PostgreSQL's default, which the listings' timestamps read as text rely
    on (robin.volumes.listing.utc_text): a server or database set otherwise gets a SET on each new connection."""
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Reported by the server when the session starts: asking costs no round trip.
        if not (dbapi_connection.info.parameter_status("DateStyle") or "").startswith("ISO"):
            dbapi_connection.execute("SET DateStyle TO ISO")
            dbapi_connection.commit()


def _postgres_connect_args(url: str, lock_timeout: float) -> dict:
    """libpq's deadlines, and the server's own for robin's sessions, set as each session starts (libpq's `options`,
    which costs no round trip): lock_timeout bounds a statement's wait for a lock another transaction holds,
    idle_in_transaction_session_timeout a transaction of robin's left open. Options the URL gives come first."""
    given = make_url(url).query.get("options", ())
    server_settings = {"lock_timeout": f"{max(1, round(lock_timeout * 1000))}ms",
                       "idle_in_transaction_session_timeout": f"{POSTGRES_IDLE_IN_TRANSACTION_S}s"}
    options = [*([given] if isinstance(given, str) else given), *(f"-c {name}={value}" for name, value
                                                                 in server_settings.items())]
    return {**POSTGRES_CONNECT_ARGS, "options": " ".join(options)}


def is_lock_timeout(exc: DBAPIError) -> bool:
    """Whether a statement gave up waiting for a lock another transaction holds (the lock timeout: PostgreSQL's
    lock_not_available, SQLite's "database is locked" after its busy timeout), rather than the database failing to
    answer: the database is up and the connection sound."""
    if getattr(exc.orig, "sqlstate", None) == POSTGRES_LOCK_NOT_AVAILABLE:
        return True
    return isinstance(exc.orig, sqlite3.OperationalError) and str(exc.orig).startswith("database is locked")


def _no_hook(_connection: Connection | Pipelined | Direct) -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class _Compiled:
    """A statement compiled once for a driver (psycopg's or SQLite's placeholders, SQLAlchemy's casts), with the
    converters SQLAlchemy applies to its parameters (a UTCDateTime's zone, a string enum's value)."""

    sql: str
    compiled: Compiled
    converters: dict

    def parameters(self, values: dict) -> dict | tuple:
        """The driver's parameters: by name (psycopg), or in the order of their placeholders (SQLite's `?`)."""
        bound = self.compiled.construct_params(values)
        for name, convert in self.converters.items():
            bound[name] = convert(bound[name])
        return tuple(bound[name] for name in self.compiled.positiontup) if self.compiled.positional else bound


# The SQL of a compare-and-set in a pipeline: it fails (division by zero) when the UPDATE changed no row, so that
# the server skips the rest of the transaction and rolls it back, where a row count would be known only after the
# COMMIT had already been sent.
_GUARDED = "WITH moved AS ({update} RETURNING 1) SELECT 1 / count(*) FROM moved"


@lru_cache(maxsize=256)
def _compile(statement: Executable, keys: tuple[str, ...], dialect: Dialect, guarded: bool) -> _Compiled:
    """Built once per statement, set of parameters and dialect (the write paths' statements are built once too). An
    INSERT returns its primary key, as SQLAlchemy's execution of one does on PostgreSQL (SQLite has RETURNING since
    3.35)."""
    if statement.is_insert:
        statement = statement.returning(*statement.table.primary_key)
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    converters = {name: convert for bind, name in compiled.bind_names.items()
                  if (convert := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
    sql = _GUARDED.format(update=compiled.string) if guarded else compiled.string
    return _Compiled(sql, compiled, converters)


class Pipelined:
    """A write transaction's statements, kept until its commit sends them with BEGIN and COMMIT in one psycopg
    pipeline: one round trip. What db.compare_and_set hands around_write_commit in place of a Connection: the same
    execute(), whose result is read once the transaction has committed."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._statements: list[tuple[_Compiled, dict, _PipelinedResult]] = []

    def execute(self, statement: Executable, parameters: dict, guarded: bool = False) -> _PipelinedResult:
        compiled = _compile(statement, tuple(parameters), self._connection.dialect, guarded)
        result = _PipelinedResult()
        self._statements.append((compiled, compiled.parameters(parameters), result))
        return result

    def commit(self) -> None:
        """Send the transaction. The first statement that failed raises (psycopg's error); the server skipped the
        rest, the COMMIT included, and left the transaction aborted."""
        driver = self._connection.connection.driver_connection
        failure = None
        try:
            # On an autocommit connection: psycopg's own BEGIN would sync to learn the transaction's status (a round
            # trip of its own), so the pipeline carries BEGIN and COMMIT itself. Leaving it is the round trip.
            with driver.pipeline():
                try:
                    driver.execute("BEGIN")
                    for compiled, parameters, result in self._statements:
                        result.cursor = driver.cursor()
                        result.cursor.execute(compiled.sql, parameters)
                    driver.execute("COMMIT")
                except psycopg.Error as exc:  # answered already: leaving the pipeline collects the skipped rest
                    failure = exc
        except psycopg.Error as exc:
            failure = failure or exc
        if failure is not None:
            raise _first_failure(failure)


def _first_failure(error: psycopg.Error) -> psycopg.Error:
    """The error that failed a pipeline, not one of the statements the server skipped after it (PipelineAborted),
    which psycopg may raise while the first is being handled."""
    while isinstance(error, psycopg.errors.PipelineAborted) and isinstance(error.__context__, psycopg.Error):
        error = error.__context__
    return error


def _translated(connection: Connection, error: psycopg.Error) -> DBAPIError:
    """psycopg's error as SQLAlchemy's (OperationalError, IntegrityError ...), which callers and the API's error
    handlers know, as if the statement had been run through SQLAlchemy."""
    return DBAPIError.instance(None, None, error, psycopg.Error, dialect=connection.dialect,
                               connection_invalidated=connection.invalidated)


class _PipelinedResult:
    cursor = None  # psycopg's, once the statement is sent

    @property
    def inserted_primary_key(self) -> tuple:
        return tuple(self.cursor.fetchone())


class Direct:
    """A SQLite write transaction's statements run on the driver's own connection as they come, each compiled once
    (_compile) and its parameters converted as SQLAlchemy would: what db.compare_and_set hands around_write_commit on
    SQLite, as it hands Pipelined on PostgreSQL. SQLAlchemy's execution of a statement (its context, events and
    result) costs several times the Python of SQLite running it (BENCHMARKS.md, "A create's wall time over HTTP,
    accounted")."""

    def __init__(self, connection: Connection):
        self._dialect = connection.dialect
        self._driver: sqlite3.Connection = connection.connection.driver_connection

    def begin(self) -> None:
        self._driver.execute("BEGIN IMMEDIATE")

    def execute(self, statement: Executable, parameters: dict) -> _DirectResult:
        compiled = _compile(statement, tuple(parameters), self._dialect, False)
        cursor = self._driver.execute(compiled.sql, compiled.parameters(parameters))
        # An INSERT's RETURNING row is read now: SQLite finishes the statement only once its rows are read.
        return _DirectResult(cursor.rowcount, tuple(cursor.fetchone()) if statement.is_insert else None)

    def commit(self) -> None:
        self._driver.commit()

    def rollback(self) -> None:
        """Nothing when no transaction is open (BEGIN failed, or the commit ended it)."""
        if self._driver.in_transaction:
            self._driver.rollback()


@dataclass(frozen=True)
class _DirectResult:
    rowcount: int
    inserted_primary_key: tuple | None


class Database:
    """Created unbound at import; `configure()` binds it to a URL (the app factory, the CLI)."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._read_sessions: sessionmaker | None = None
        self._write_sessions: sessionmaker | None = None
        self._write_engine: Engine | None = None
        self._read_engine: Engine | None = None
        self._write_queue: WriteQueue | None = None
        self.lock_timeout = DATABASE_LOCK_TIMEOUT_S
        # Entered with the connection just before a write transaction commits and left once it has: what it
        # writes commits or rolls back with the transaction (robin.audit puts a request's audit row there). In a
        # compare_and_set it is given the transaction's Pipelined (PostgreSQL: the same execute(), whose statements are
        # sent with the COMMIT) or Direct (SQLite: the same execute() on the driver's connection) instead.
        self.around_write_commit: Callable[[Connection | Pipelined | Direct], AbstractContextManager] = _no_hook

    def configure(self, url: str, pool_size: int = DEFAULT_POOL_SIZE,
                  lock_timeout: float = DATABASE_LOCK_TIMEOUT_S) -> None:
        """Bind to `url`, keeping up to `pool_size` connections open between transactions: as many as the
        process's threads use at once, so that none is opened and closed per request. A statement waits up to
        `lock_timeout` seconds for a lock another transaction holds (ROBIN_DATABASE_LOCK_TIMEOUT)."""
        if self.engine is not None and self.engine.url.render_as_string(False) == normalize_url(url) \
                and self.engine.pool.size() == pool_size and self.lock_timeout == lock_timeout:
            return
        self.dispose()
        url = normalize_url(url)
        is_sqlite = make_url(url).get_backend_name() == "sqlite"
        connect_args = ({"timeout": lock_timeout, "check_same_thread": False} if is_sqlite
                        else _postgres_connect_args(url, lock_timeout))
        engine = create_engine(url, connect_args=connect_args, pool_size=pool_size)
        self.lock_timeout = lock_timeout
        if is_sqlite:
            queue_path = _write_queue_path(url)
            self._write_queue = WriteQueue(queue_path, lock_timeout) if queue_path else None
            _configure_sqlite(engine, self._write_queue)  # a file: nothing to lose while idle
        else:
            _ping_idle_connections(engine, POSTGRES_IDLE_PING_S)
            _keep_iso_dates(engine)
        self.engine = engine
        self._read_sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self._write_engine = engine.execution_options(robin_write_lock=True)
        # PostgreSQL's READ COMMITTED gives each statement its own snapshot, in a transaction or not: a Core read
        # in autocommit reads the same, without psycopg's BEGIN and COMMIT, two round trips of three. SQLite's
        # BEGIN and COMMIT cost no round trip.
        self._read_engine = engine if is_sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write_sessions = sessionmaker(bind=self._write_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine is not None and self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self._write_queue is not None:
            self._write_queue.close()
        self._write_queue = None
        self.engine = self._read_sessions = self._write_sessions = self._write_engine = self._read_engine = None

    def unit_of_work(self) -> AbstractContextManager[Session]:
        return self._transaction(self._write_sessions, writes=True)

    def reading(self) -> AbstractContextManager[Session]:
        return self._transaction(self._read_sessions, writes=False)

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A Core connection for the statements of the hot read paths (listings): half the Python of an ORM
        session around the same statement. On PostgreSQL each statement is a transaction of its own."""
        if self._read_engine is None:
            raise RuntimeError("database not configured")
        with self._read_engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A Core connection in a write transaction, for single statements on hot paths (state
        changes, audit rows): a third of the cost of an ORM session."""
        if self._write_engine is None:
            raise RuntimeError("database not configured")
        with self._queued_writes():
            with self._write_engine.connect() as connection, connection.begin() as transaction:
                yield connection
                with self.around_write_commit(connection):
                    transaction.commit()

    def compare_and_set(self, update: Executable, parameters: dict) -> bool:
        """Run `update`, which changes one row only while it holds what its writer read (a state machine's move),
        as a write transaction of its own with what around_write_commit adds, committed when it changed that row.
        When it changed none (another writer moved the row first), nothing of the transaction is written: False.

        On PostgreSQL the transaction is one round trip instead of four: BEGIN, the UPDATE, the hook's statements
        and COMMIT go to the server together in a psycopg pipeline, and the UPDATE fails when it changed no row,
        which rolls the whole transaction back. SQLite's statements cost no round trip, only Python: they run on the
        driver's connection without SQLAlchemy's execution around each (Direct)."""
        if self.is_sqlite:
            return self._compare_and_set_direct(update, parameters)
        return self._compare_and_set_pipelined(update, parameters)

    def _compare_and_set_direct(self, update: Executable, parameters: dict) -> bool:
        if self._write_engine is None:
            raise RuntimeError("database not configured")
        with self._queued_writes(), self._write_engine.connect() as connection:
            transaction = Direct(connection)
            if self._write_queue is not None:
                self._write_queue.acquire()  # as the engine's begin event does: released by _queued_writes
            try:
                transaction.begin()
                if transaction.execute(update, parameters).rowcount != 1:
                    transaction.rollback()
                    return False
                with self.around_write_commit(transaction):
                    transaction.commit()
            except BaseException as exc:
                transaction.rollback()
                if isinstance(exc, sqlite3.Error):  # as SQLAlchemy raises it: the API's handlers know that one
                    raise DBAPIError.instance(None, None, exc, sqlite3.Error, dialect=connection.dialect) from exc
                raise
        return True

    def _compare_and_set_pipelined(self, update: Executable, parameters: dict) -> bool:
        if self._read_engine is None:
            raise RuntimeError("database not configured")
        with self._read_engine.connect() as connection:  # autocommit: the pipeline carries BEGIN and COMMIT
            transaction = Pipelined(connection)
            transaction.execute(update, parameters, guarded=True)
            try:
                with self.around_write_commit(transaction):
                    transaction.commit()
            except BaseException as exc:
                self._end_failed_pipeline(connection, exc)
                if isinstance(exc, psycopg.errors.DivisionByZero):
                    return False  # the guard: the UPDATE changed no row
                if isinstance(exc, psycopg.Error):
                    raise _translated(connection, exc) from exc
                raise
        return True

    def _end_failed_pipeline(self, connection: Connection, cause: BaseException) -> None:
        """Roll back what a failed pipeline left open (its BEGIN ran, its COMMIT was skipped), so that the connection
        goes back to the pool ready for the next request. One the server closed is dropped with every other this
        process holds, as SQLAlchemy does on a statement of its own: the next requests reconnect."""
        driver = connection.connection.driver_connection
        if isinstance(cause, psycopg.Error) and connection.dialect.is_disconnect(cause, driver, None):
            connection.invalidate(cause)
            self.engine.dispose()  # the pooled connections are closed; those checked out, when they come back
            return
        try:
            driver.rollback()  # nothing to send when the transaction has already ended
        except psycopg.Error as exc:
            connection.invalidate(exc)

    @contextmanager
    def _queued_writes(self) -> Iterator[None]:
        """Around a write transaction, ended and its connection returned: the SQLite write queue's turn that its
        BEGIN IMMEDIATE took is given back (not by a transaction nested in another: the outer one's)."""
        queue = self._write_queue
        if queue is None or queue.held_here():
            yield
            return
        try:
            yield
        finally:
            queue.release()

    @contextmanager
    def _transaction(self, sessions: sessionmaker | None, writes: bool) -> Iterator[Session]:
        if sessions is None:
            raise RuntimeError("database not configured")
        with self._queued_writes() if writes else nullcontext():
            session = sessions()
            try:
                yield session
                if writes and session.in_transaction():
                    with self.around_write_commit(session.connection()):
                        session.commit()
                else:
                    session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()


db = Database()


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url  # not a main option: '%' in passwords would be interpolated
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    _ensure_sqlite_dir(url)
    pending = pending_migrations(url)
    command.upgrade(_alembic_config(url), revision)
    log.info("database migrated", extra={"applied": pending, "revision": revision})


def pending_migrations(url: str) -> list[str]:
    """Revisions between the database's and the code's head (empty when up to date)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(url))
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    return [rev.revision for rev in script.iterate_revisions(script.get_heads(), current or None)][::-1] \
        if set(current) != set(script.get_heads()) else []


def new_revision(url: str, message: str, rev_id: str) -> None:
    from alembic import command

    command.revision(_alembic_config(url), message=message, rev_id=rev_id, autogenerate=True)


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
