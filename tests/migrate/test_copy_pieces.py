"""Large files copied in pieces by several threads at once, each chunk read back once written and compared with
what was read, and what the verification makes of that: between two directories of this host's file system, with
pieces made small so that a few MiB make several."""
from __future__ import annotations

import filecmp
import hashlib
import os
from pathlib import Path

import pytest

from robin.migrate import copy, verify
from robin.migrate.copy import Copier, file_digest
from robin.migrate.tree import scan

PIECE = 3 * copy.CHUNK


@pytest.fixture()
def sides(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setattr(copy, "SEGMENT", PIECE)
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.mkdir()
    destination.mkdir()
    with open(source / "large.bin", "wb") as handle:  # 4 pieces, the last one short; a zero MiB in the second
        handle.write(os.urandom(PIECE + copy.CHUNK) + bytes(copy.CHUNK) + os.urandom(2 * PIECE - 2 * copy.CHUNK + 5))
    (source / "small.txt").write_bytes(b"small\n")
    return source, destination


def copied(source: Path, destination: Path):
    tree = scan(str(source))
    copier = Copier(str(source), str(destination), 4, read_back=True)
    stats = copier.copy(tree)
    assert stats.errors == [] and stats.files_copied == 2
    return tree, copier


def test_a_large_file_arrives_whole_and_is_known_equal_at_the_inode_it_was_written_to(sides):
    source, destination = sides
    tree, copier = copied(source, destination)

    assert filecmp.cmp(source / "large.bin", destination / "large.bin", shallow=False)
    known = copier.sources[next(e.inode for e in tree.entries if e.rel == "large.bin")]
    target = os.stat(destination / "large.bin")
    assert known.same_at == (target.st_dev, target.st_ino)
    assert verify.verify(tree, str(destination), copier.sources, copier.refused(), 4).ok


def test_a_copy_without_reading_back_leaves_both_sides_to_the_verification(sides, monkeypatch):
    source, destination = sides
    tree = scan(str(source))
    copier = Copier(str(source), str(destination), 4)
    assert copier.copy(tree).errors == [] and copier.sources == {}
    read = []
    monkeypatch.setattr(verify, "file_digest", lambda path: read.append(path) or file_digest(path))

    assert verify.verify(tree, str(destination), copier.sources, copier.refused(), 4).ok
    assert sorted(read) == sorted(str(side / name) for side in (source, destination)
                                  for name in ("large.bin", "small.txt"))


def test_a_file_of_zeros_is_left_to_the_verification_which_finds_it_equal(tmp_path):
    """Its all-zero chunk is not written (a hole), so it reads back short until its end is set."""
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.mkdir()
    destination.mkdir()
    (source / "zeros").write_bytes(bytes(4096))
    tree = scan(str(source))
    copier = Copier(str(source), str(destination), 2, read_back=True)

    assert copier.copy(tree).errors == [] and copier.sources == {}
    assert (destination / "zeros").read_bytes() == bytes(4096)
    assert verify.verify(tree, str(destination), copier.sources, copier.refused(), 2).ok


def test_a_chunk_that_reads_back_otherwise_is_not_taken_as_landed(tmp_path):
    """What the comparison itself says, on a real file: equal bytes, other bytes, a file shorter than the chunk."""
    path = tmp_path / "written"
    path.write_bytes(b"abcdef")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert copy._reads_back(fd, 2, b"cdef")
        assert not copy._reads_back(fd, 2, b"cdeX")
        assert not copy._reads_back(fd, 4, b"efgh")
    finally:
        os.close(fd)


def test_the_verification_reads_no_file_the_copy_read_back(sides, monkeypatch):
    source, destination = sides
    tree, copier = copied(source, destination)
    read = []
    monkeypatch.setattr(verify, "file_digest", lambda path: read.append(path) or file_digest(path))

    assert verify.verify(tree, str(destination), copier.sources, copier.refused(), 4).ok
    assert read == []


def test_another_file_put_in_the_place_of_one_read_back_is_read_and_its_difference_reported(sides):
    """Same size and times, one byte of its third piece changed, under the same name: a file the copy never read
    back, which the verification reads."""
    source, destination = sides
    tree, copier = copied(source, destination)
    target, root = destination / "large.bin", destination.stat()
    data = bytearray(target.read_bytes())
    data[2 * PIECE + 7] ^= 0xFF
    (destination / "other").write_bytes(bytes(data))
    st = target.stat()
    os.chmod(destination / "other", st.st_mode)
    os.utime(destination / "other", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(destination / "other", target)
    os.utime(destination, ns=(root.st_atime_ns, root.st_mtime_ns))  # as the copy left it

    found = verify.verify(tree, str(destination), copier.sources, copier.refused(), 4)

    assert [(m.path, m.what) for m in found.mismatches] == [("large.bin", "content")]
    # Each side's SHA-256, as `sha256sum` gives it.
    assert found.mismatches[0].source == hashlib.sha256((source / "large.bin").read_bytes()).hexdigest()
    assert found.mismatches[0].destination == hashlib.sha256(target.read_bytes()).hexdigest()
