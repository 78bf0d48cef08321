"""The work dir's lock files: taken by one process at a time, removed when their holder ends, and never held by
two processes at once, however removal and taking interleave (real processes, real flock)."""
from __future__ import annotations

import multiprocessing
import os

from robin.migrate import locks

ROUNDS = 1500  # per process: each round takes the lock, holds it across a few calls, and removes it


def test_a_held_lock_is_refused_to_another_process_then_removed_by_its_holder(tmp_path):
    path = str(tmp_path / "locks" / "source-x.lock")
    fd = locks.take(path)
    assert fd is not None

    with multiprocessing.get_context("fork").Pool(1) as other:
        assert other.apply(_tries, (path,)) is False

    locks.release(path, fd)
    assert not (tmp_path / "locks").exists()  # its last file gone, the directory too
    with multiprocessing.get_context("fork").Pool(1) as other:
        assert other.apply(_tries, (path,)) is True


def test_a_lock_file_left_by_a_killed_run_is_taken_and_removed(tmp_path):
    path = tmp_path / "locks" / "destination-x.lock"
    path.parent.mkdir()
    path.write_bytes(b"")  # what a run killed while holding it leaves: the file, and no lock

    fd = locks.take(str(path))

    assert fd is not None
    locks.release(str(path), fd)
    assert not path.parent.exists()


def test_the_directory_stays_while_another_lock_is_in_it(tmp_path):
    first, second = (str(tmp_path / "locks" / f"{name}.lock") for name in ("a", "b"))
    held = locks.take(first), locks.take(second)

    locks.release(first, held[0])

    assert os.listdir(tmp_path / "locks") == ["b.lock"]
    locks.release(second, held[1])


def test_no_two_processes_ever_hold_the_lock_while_holders_remove_it(tmp_path):
    """Each holder removes the file before it unlocks; a process that opened it just before then gets the lock
    of a removed file, while a third makes the name anew. A marker made with O_EXCL under the lock catches two
    holders at once."""
    path, marker = str(tmp_path / "locks" / "destination-x.lock"), str(tmp_path / "holder")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_contend, [(path, marker)] * 4)

    assert sum(taken for taken, _ in results) > 0
    assert [overlaps for _, overlaps in results] == [0, 0, 0, 0]
    assert not os.path.exists(path)


def _tries(path: str) -> bool:
    fd = locks.take(path)
    if fd is None:
        return False
    locks.release(path, fd)
    return True


def _contend(path: str, marker: str) -> tuple[int, int]:
    taken = overlaps = 0
    for _ in range(ROUNDS):
        fd = locks.take(path)
        if fd is None:
            continue
        taken += 1
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            overlaps += 1  # another process believes it holds the lock too
        else:
            os.stat(path)  # a few calls under the lock, as a run makes many
            os.unlink(marker)
        locks.release(path, fd)
    return taken, overlaps
