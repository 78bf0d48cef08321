"""SQLite's writers take turns in a queue beside the database (robin.db.WriteQueue): a write transaction holds the
turn (an flock of `<database>.write.lock`, which every process's writers ask for) from its BEGIN IMMEDIATE until it
ended, committed or not; a read never takes it, and a transaction nested in another leaves the outer one's turn.
The second commit (db.compare_and_set), which runs on the driver's connection, takes its turn as well."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, insert, text, update
from sqlalchemy.exc import OperationalError

from robin.db import Database, WriteQueue, is_lock_timeout


@pytest.fixture
def database(tmp_path):
    database = Database()
    database.configure(f"sqlite:///{tmp_path / 'robin.db'}")
    with database.unit_of_work() as session:
        session.execute(text("CREATE TABLE rows (x INTEGER)"))
    yield database
    database.dispose()


def taken_elsewhere(path: Path) -> bool:
    """Whether another writer (another open file description: another process's, as the kernel sees it) would wait."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing it drops the lock it may have taken
    return False


def test_a_write_transaction_holds_the_turn_until_it_commits(database, tmp_path):
    lock = tmp_path / "robin.write.lock"
    with database.unit_of_work() as session:
        session.execute(text("INSERT INTO rows VALUES (1)"))
        assert taken_elsewhere(lock)
    assert not taken_elsewhere(lock)
    with database.writing() as connection:
        connection.execute(text("INSERT INTO rows VALUES (2)"))
        assert taken_elsewhere(lock)
    assert not taken_elsewhere(lock)


def test_a_failed_write_transaction_gives_its_turn_back(database, tmp_path):
    with pytest.raises(RuntimeError), database.unit_of_work() as session:
        session.execute(text("INSERT INTO rows VALUES (1)"))
        raise RuntimeError("the service refused")
    assert not taken_elsewhere(tmp_path / "robin.write.lock")
    with database.reading() as session:
        assert session.scalar(text("SELECT count(*) FROM rows")) == 0  # rolled back
    with database.unit_of_work() as session:  # and the next writer is not kept waiting
        session.execute(text("INSERT INTO rows VALUES (2)"))


def test_a_read_takes_no_turn(database, tmp_path):
    with database.reading() as session:
        session.execute(text("SELECT count(*) FROM rows"))
        assert not taken_elsewhere(tmp_path / "robin.write.lock")
    with database.read_connection() as connection:
        connection.execute(text("SELECT count(*) FROM rows"))
        assert not taken_elsewhere(tmp_path / "robin.write.lock")


def test_a_nested_write_transaction_leaves_the_outer_ones_turn(database, tmp_path):
    lock = tmp_path / "robin.write.lock"
    with database.unit_of_work() as session:
        session.execute(text("INSERT INTO rows VALUES (1)"))
        with database.reading() as inner:  # a read inside: nothing to give back
            inner.execute(text("SELECT 1"))
        with database.unit_of_work():  # a write that never began (it issued nothing)
            pass
        assert taken_elsewhere(lock)
    assert not taken_elsewhere(lock)


def test_the_writers_of_a_process_and_another_take_turns(database, tmp_path):
    """Another process writing while this one holds the turn waits for it, then writes."""
    script = ("import sys; from sqlalchemy import text; from robin.db import Database; d = Database(); "
              "d.configure(sys.argv[1]);\n"
              "with d.unit_of_work() as s: s.execute(text('INSERT INTO rows VALUES (2)'))\n"
              "d.dispose()")
    with database.unit_of_work() as session:
        session.execute(text("INSERT INTO rows VALUES (1)"))
        writer = subprocess.Popen([sys.executable, "-c", script, f"sqlite:///{tmp_path / 'robin.db'}"])
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                writer.wait(0.5)  # the other process waits in the queue (or in SQLite) while this one writes
        except BaseException:
            writer.kill()
            raise
    assert writer.wait(60) == 0
    with database.reading() as session:
        assert session.scalars(text("SELECT x FROM rows ORDER BY x")).all() == [1, 2]


def test_writes_go_on_without_a_usable_queue_file(database, tmp_path):
    """A lock file that cannot be opened (another user's, a directory gone) leaves the turns to SQLite alone."""
    database._write_queue._path = tmp_path / "gone" / "robin.write.lock"
    with database.unit_of_work() as session:
        session.execute(text("INSERT INTO rows VALUES (1)"))
    with database.writing() as connection:
        connection.execute(text("INSERT INTO rows VALUES (2)"))
    with database.reading() as session:
        assert session.scalar(text("SELECT count(*) FROM rows")) == 2


def test_a_writer_that_waited_out_the_busy_timeout_goes_on_to_sqlite(tmp_path):
    """The queue never holds a writer past SQLite's own deadline: past it, the writer asks SQLite directly."""
    path = tmp_path / "robin.write.lock"
    queue = WriteQueue(path, timeout=0.05)
    other = os.open(path, os.O_RDONLY | os.O_CREAT)  # another process's writer, holding its turn throughout
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        queue.acquire()
        assert not queue.held_here()
    finally:
        os.close(other)
    queue.acquire()  # free again: taken at once
    assert queue.held_here() and taken_elsewhere(path)
    queue.release()
    assert not taken_elsewhere(path)
    queue.close()


ITEMS = Table("items", MetaData(), Column("id", Integer, primary_key=True), Column("x", Integer))
MOVE = update(ITEMS).where(ITEMS.c.id == bindparam("row_id"), ITEMS.c.x == bindparam("old")).values(
    x=bindparam("new"))


@pytest.fixture
def items(database):
    with database.writing() as connection:
        connection.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, x INTEGER)"))
        connection.execute(text("INSERT INTO items VALUES (1, 0)"))
    return database


def values(database: Database) -> list[tuple[int, int]]:
    with database.reading() as session:
        return [tuple(row) for row in session.execute(text("SELECT id, x FROM items ORDER BY id"))]


def test_a_compare_and_set_holds_the_turn_and_commits_its_hooks_statements_with_it(items, tmp_path):
    """On SQLite the second commit runs on the driver's connection (robin.db.Direct), not through SQLAlchemy: in the
    queue's turn, with what around_write_commit adds in the same transaction (an INSERT's key read back), and only
    when its UPDATE moved the row."""
    lock, inserted = tmp_path / "robin.write.lock", []

    @contextmanager
    def hook(transaction):
        assert taken_elsewhere(lock)
        inserted.append(transaction.execute(insert(ITEMS), {"x": 100}).inserted_primary_key[0])
        yield

    items.around_write_commit = hook
    assert items.compare_and_set(MOVE, {"row_id": 1, "old": 0, "new": 1}) is True
    assert not taken_elsewhere(lock)
    assert items.compare_and_set(MOVE, {"row_id": 1, "old": 0, "new": 2}) is False  # moved already
    assert not taken_elsewhere(lock)
    assert inserted == [2] and values(items) == [(1, 1), (2, 100)]  # the lost one wrote nothing, its hook neither


def test_a_compare_and_set_that_waited_out_the_lock_raises_as_sqlalchemy_does_and_changes_nothing(tmp_path):
    """Another connection (another host's process, as SQLite sees it) holds the write lock: past the busy timeout the
    compare-and-set raises SQLAlchemy's OperationalError, which the API answers 503 database_busy; it gives its turn
    back, and succeeds once the lock is free."""
    database = Database()
    database.configure(f"sqlite:///{tmp_path / 'robin.db'}", lock_timeout=0.2)
    try:
        with database.writing() as connection:
            connection.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, x INTEGER)"))
            connection.execute(text("INSERT INTO items VALUES (1, 0)"))
        holder = sqlite3.connect(tmp_path / "robin.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(OperationalError) as raised:
                database.compare_and_set(MOVE, {"row_id": 1, "old": 0, "new": 1})
            assert is_lock_timeout(raised.value)
            assert not taken_elsewhere(tmp_path / "robin.write.lock")
        finally:
            holder.rollback()
            holder.close()
        assert values(database) == [(1, 0)]
        assert database.compare_and_set(MOVE, {"row_id": 1, "old": 0, "new": 1}) is True
        assert values(database) == [(1, 1)]
    finally:
        database.dispose()
