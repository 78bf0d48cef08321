"""A realistic tree to migrate: nested directories, a large sparse file, hard links, symlinks (relative, absolute,
dangling, to a directory), odd names (spaces, UTF-8, a newline, bytes that are not UTF-8), permissions with set-id
bits, several owners, a fifo, an empty file and an empty directory, and timestamps with nanoseconds."""
from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

SPARSE_SIZE = 256 * 2**20  # logical; only two 1 MiB islands hold data
HARDLINKS = ("shared-original", "docs/shared-link", "shared link two")  # three names of one file
ODD_NAMES = ["with space", "ünïcødé-ñame", "new\nline", "tab\there", "-leading-dash", "quote'and\"dq",
             os.fsdecode(b"latin1-\xe9t\xe9")]


def _write(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0), mtime_ns: int | None = None):
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def build(root: Path, seed: int = 7, small_files: int = 60) -> dict:
    """Fill `root` (an existing directory); what was made, for the tests' own checks."""
    rng = random.Random(seed)
    base_ns = 1_600_000_000_123_456_789
    (root / "docs" / "deep" / "deeper" / "deepest").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for i in range(small_files):
        folder = root / "docs" / ("deep" if i % 3 else "") / ("deeper" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"note-{i:03d}.txt", rng.randbytes(rng.randint(1, 9000)), 0o640, (1000 + i % 3, 1000),
               base_ns + i * 1_000_000_007)
    _write(root / "docs" / "deep" / "deeper" / "deepest" / "bottom.bin", rng.randbytes(300_000), 0o600, (1001, 1002))
    _write(root / "empty.txt", b"", 0o644)
    for name in ODD_NAMES:
        _write(root / name, name.encode(errors="surrogateescape") * 3, 0o664, (2000, 2000), base_ns)
    _sparse(root / "sparse.img")
    _write(root / HARDLINKS[0], rng.randbytes(50_000), 0o644, (1000, 1000), base_ns)
    for name in HARDLINKS[1:]:
        os.link(root / HARDLINKS[0], root / name)
    os.symlink("docs/deep", root / "link-to-dir")
    os.symlink("../shared-original", root / "docs" / "relative-link")
    os.symlink("/etc/hostname", root / "absolute-link")
    os.symlink("does/not/exist", root / "dangling-link")
    os.lchown(root / "dangling-link", 1005, 1006)
    _write(root / "setuid-tool", b"#!/bin/sh\necho hi\n", 0o4755)
    _write(root / "setgid-dir-file", b"x", 0o2755)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    _write(root / "read-only", b"cannot touch this", 0o400, (1234, 5678))
    os.mkfifo(root / "a-fifo", 0o620)
    locked = root / "locked-dir"
    locked.mkdir()
    _write(locked / "inside", b"in a 0500 directory", 0o444)
    os.chmod(locked, 0o500)
    os.utime(root / "docs", ns=(base_ns, base_ns))
    return {"sparse": "sparse.img", "hardlinks": list(HARDLINKS)}


def _sparse(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.truncate(SPARSE_SIZE)
        handle.seek(64 * 2**20)
        handle.write(b"\x5a" * 2**20)
        handle.seek(SPARSE_SIZE - 2**20)
        handle.write(b"\xa5" * 2**20)
    os.chmod(path, 0o600)


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a faithful copy keeps, per relative path (not atimes)."""
    result = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    content = hashlib.file_digest(handle, "sha256").hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            result[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                           st.st_size if stat.S_ISREG(st.st_mode) else None, content)
    return result
