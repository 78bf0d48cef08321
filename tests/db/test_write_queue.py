"""SQLite's writers take turns in a queue beside the database (robin.db.WriteQueue): a write transaction holds the
turn (an flock of `<database>.write.lock`, which every process's writers ask for) from its BEGIN IMMEDIATE until it
ended, committed or not; a read never takes it, and a transaction nested in another leaves the outer one's turn."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from robin.db import Database, WriteQueue


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
