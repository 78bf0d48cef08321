"""A directory tree as the copy and its verification see it: every entry under a root, with its lstat and (when
asked) its extended attributes and ACLs, in a stable order (a directory before what it holds, names sorted), and
the totals a plan and a progress bar need.

Paths are relative to the root and kept as `str` with the file system encoding's surrogate escapes, so any
byte string a POSIX name can hold (newlines, invalid UTF-8) goes through unchanged.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from robin.migrate import xattrs as xattr_names
from robin.migrate.xattrs import Xattrs


@dataclass(frozen=True)
class Entry:
    rel: str  # "" for the root itself
    st: os.stat_result
    xattrs: Xattrs = field(default_factory=dict)  # the copied names (robin.migrate.xattrs), when the walk read them

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)

    @property
    def inode(self) -> tuple[int, int]:
        return (self.st.st_dev, self.st.st_ino)


@dataclass
class Totals:
    """What a tree holds. Hard-linked files count once: that is what a copy writes and a quota charges."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    specials: int = 0  # fifos, sockets, device nodes
    hardlinks: int = 0  # extra names of a file counted in `files`
    file_bytes: int = 0  # file sizes, holes included: what a copy reads through
    symlink_bytes: int = 0  # symlink targets' lengths
    allocated_bytes: int = 0  # blocks actually used: what a file system on an RBD image needs for data
    xattr_entries: int = 0  # entries (each name of a file) with extended attributes other than ACLs
    acl_entries: int = 0  # entries with a POSIX ACL (access or default)

    @property
    def logical_bytes(self) -> int:
        """What a CephFS quota counts (ceph.dir.rbytes): file sizes, holes included, and symlink targets."""
        return self.file_bytes + self.symlink_bytes

    @property
    def entries(self) -> int:
        return self.files + self.directories + self.symlinks + self.specials + self.hardlinks


@dataclass
class Tree:
    root: str
    entries: list[Entry] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)


def join(root: str, rel: str) -> str:
    return os.path.join(root, rel) if rel else root


def walk(root: str, skip_at_root: frozenset[str] = frozenset(), with_xattrs: bool = False,
         ignored_at_root: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Every entry under `root`, each directory before what it holds, without following symlinks; with their
    extended attributes if asked (but the names `ignored_at_root` of the root). An entry that vanishes between its
    directory's listing and its lstat is left out (the source may be in use)."""
    def read(path: str, ignored: frozenset[str] = frozenset()) -> Xattrs:
        return xattr_names.read(path, ignored) if with_xattrs else {}

    yield Entry("", os.lstat(root), read(root, ignored_at_root))
    pending = [""]
    while pending:
        directory = pending.pop()
        children = []
        with os.scandir(join(root, directory)) as listing:
            for item in listing:
                if not directory and item.name in skip_at_root:
                    continue
                try:
                    children.append(Entry(os.path.join(directory, item.name) if directory else item.name,
                                          item.stat(follow_symlinks=False), read(item.path)))
                except FileNotFoundError:
                    continue
        children.sort(key=lambda entry: entry.rel)
        yield from children
        # Reversed onto a stack: the directories are then listed in name order too.
        pending.extend(entry.rel for entry in reversed(children) if entry.is_dir)


def scan(root: str, skip_at_root: frozenset[str] = frozenset(), with_xattrs: bool = True,
         ignored_at_root: frozenset[str] = frozenset()) -> Tree:
    tree = Tree(root)
    seen_inodes: set[tuple[int, int]] = set()
    totals = tree.totals
    for entry in walk(root, skip_at_root, with_xattrs, ignored_at_root):
        tree.entries.append(entry)
        if entry.xattrs:
            totals.acl_entries += xattr_names.has_acl(entry.xattrs)
            totals.xattr_entries += any(name not in xattr_names.ACLS for name in entry.xattrs)
        mode = entry.st.st_mode
        if stat.S_ISDIR(mode):
            totals.directories += 1
        elif stat.S_ISLNK(mode):
            totals.symlinks += 1
            totals.symlink_bytes += entry.st.st_size
        elif stat.S_ISREG(mode):
            if entry.st.st_nlink > 1:
                if entry.inode in seen_inodes:
                    totals.hardlinks += 1
                    continue
                seen_inodes.add(entry.inode)
            totals.files += 1
            totals.file_bytes += entry.st.st_size
            totals.allocated_bytes += entry.st.st_blocks * 512
        else:
            totals.specials += 1
    return tree
