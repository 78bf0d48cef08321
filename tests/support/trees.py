"""A realistic tree to migrate: nested directories, a large sparse file, hard links, symlinks (relative, absolute,
dangling, to a directory), odd names (spaces, UTF-8, a newline, bytes that are not UTF-8), permissions with set-id
bits, several owners, a fifo, an empty file and an empty directory, and timestamps with nanoseconds."""
from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
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


# --- extended attributes and POSIX ACLs ------------------------------------------------------------------------

ATTRIBUTED = ("acl-file", "acl-dir", "acl-dir/inherited", "acl-dir/sub", "tagged", "tagged-dir", "plain")


def build_with_attributes(root: Path) -> None:
    """Files and directories with `user.*` xattrs and POSIX ACLs, set as a user would (setfattr, setfacl): an access
    ACL with a named user and a named group whose mask (r--) is narrower than the owning group's bits would be
    (rw-), so st_mode's group bits are the mask; a directory with access and default ACLs and what it handed down
    to a file and a directory made in it; xattrs on a file, on a directory and one with a binary value."""
    _write(root / "acl-file", b"shared with user 33", 0o664, (1000, 1000), 1_600_000_000_000_000_001)
    _run("setfacl", "-m", "u:33:rw-,g:44:rw-,m::r--", str(root / "acl-file"))
    (root / "acl-dir").mkdir()
    _run("setfacl", "-m", "u:33:rwx,g:44:r-x,m::r-x", str(root / "acl-dir"))
    _run("setfacl", "-d", "-m", "u:1001:rwx,g:1002:r-x,o::---", str(root / "acl-dir"))
    (root / "acl-dir" / "inherited").write_bytes(b"a default ACL made this file's ACL")
    (root / "acl-dir" / "sub").mkdir()  # inherits the default ACL as its access and its default ACL
    _write(root / "tagged", b"tagged", 0o644, (1000, 1000))
    _run("setfattr", "-n", "user.color", "-v", "blue", str(root / "tagged"))
    _run("setfattr", "-n", "user.binary", "-v", "0x00ff10", str(root / "tagged"))
    (root / "tagged-dir").mkdir()
    _run("setfattr", "-n", "user.project", "-v", "shop", str(root / "tagged-dir"))
    _write(root / "plain", b"no attributes", 0o600)


def attributes(root: Path) -> dict[str, tuple[str, str]]:
    """Per relative path, what `getfacl -p -n` and `getfattr -d -m - -h` say of it (run over the tree with -R), as
    an operator reads them: ACLs in getfacl's words, every xattr name the file system shows."""
    acls = _by_file(_run("getfacl", "-R", "-p", "-n", ".", cwd=root))
    found = _by_file(_run("getfattr", "-R", "-d", "-m", "-", "-h", ".", cwd=root))
    return {path: (acls.get(path, ""), found.get(path, "")) for path in sorted(set(acls) | set(found))}


def _by_file(output: str) -> dict[str, str]:
    """getfacl's and getfattr's -R output, a block per file headed `# file: PATH`, as {path: the block's lines}."""
    blocks = {}
    for block in output.strip().split("\n\n"):
        header, _, rest = block.partition("\n")
        path = os.path.normpath(header.removeprefix("# file: "))
        blocks[path] = rest
    return blocks


def _run(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, cwd=cwd).stdout
