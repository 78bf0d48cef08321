"""The verification pass after a copy: both trees read afresh, every entry compared by type, owner, mode, mtime,
extended attributes and POSIX ACLs, every file by size and checksum, symlinks by target, device nodes by number,
hard links by grouping; and what only the destination has is reported too. Access times are not compared: reading
a file moves its own. Attributes the destination refused (the copy's `xattrs_refused`) are reported there, and
left out here."""
from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from robin.migrate import xattrs
from robin.migrate.copy import file_digest
from robin.migrate.progress import Progress
from robin.migrate.tree import Entry, join, scan

MAX_REPORTED = 1000  # mismatches listed in a report; the count is always exact


@dataclass(frozen=True)
class Mismatch:
    path: str
    # missing | extra | type | size | content | owner | mode | mtime | xattr | acl | target | device | hardlinks
    # | error
    what: str
    source: str | int | None = None
    destination: str | int | None = None


@dataclass
class Verification:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict:
        return {"entries": self.entries, "files": self.files, "bytes": self.bytes, "ok": self.ok,
                "mismatch_count": len(self.mismatches),
                "mismatches": [asdict(m) for m in self.mismatches[:MAX_REPORTED]]}


def verify(source_root: str, destination_root: str, parallel: int = 8, skip_at_source_root=frozenset(),
           keep_at_destination_root=frozenset(), refused: Iterable[tuple[str, str]] = (),
           progress: Progress | None = None) -> Verification:
    """`refused`: the (path, attribute name) pairs the destination refused."""
    skipped = frozenset(refused)
    source = scan(source_root, skip_at_source_root)
    destination = {entry.rel: entry for entry in scan(destination_root, keep_at_destination_root,
                                                      ignored_at_root=xattrs.ROOT_ONLY_OURS).entries}
    result = Verification(entries=len(source.entries))
    to_checksum: list[str] = []
    seen_inodes: set[tuple[int, int]] = set()
    for entry in source.entries:
        found = destination.pop(entry.rel, None)
        problems = _compare(entry, found, skipped)
        if not problems and entry.is_symlink:
            problems = _compare_targets(entry.rel, source_root, destination_root)
        result.mismatches.extend(problems)
        if not problems and entry.is_file and entry.inode not in seen_inodes:
            seen_inodes.add(entry.inode)
            to_checksum.append(entry.rel)
            result.files += 1
            result.bytes += entry.st.st_size
    result.mismatches.extend(Mismatch(rel, "extra") for rel in sorted(destination))
    result.mismatches.extend(_hardlink_mismatches(source.entries, destination_root))
    progress = progress or Progress(0, 0, enabled=False)

    def content(rel: str) -> Mismatch | None:
        try:
            ours, theirs = file_digest(join(source_root, rel)), file_digest(join(destination_root, rel))
        except OSError as exc:
            return Mismatch(rel, "error", destination=str(exc))
        finally:
            progress.add(0, files=1)
        return Mismatch(rel, "content", ours, theirs) if ours != theirs else None

    with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="migrate-verify") as pool:
        result.mismatches.extend(m for m in pool.map(content, to_checksum) if m is not None)
    return result


def _compare(entry: Entry, found: Entry | None, skipped: frozenset[tuple[str, str]]) -> list[Mismatch]:
    rel, ours = entry.rel, entry.st
    if found is None:
        return [Mismatch(rel, "missing")]
    theirs = found.st
    if stat.S_IFMT(ours.st_mode) != stat.S_IFMT(theirs.st_mode):
        return [Mismatch(rel, "type", stat.filemode(ours.st_mode), stat.filemode(theirs.st_mode))]
    problems = []
    if (ours.st_uid, ours.st_gid) != (theirs.st_uid, theirs.st_gid):
        problems.append(Mismatch(rel, "owner", f"{ours.st_uid}:{ours.st_gid}", f"{theirs.st_uid}:{theirs.st_gid}"))
    if not entry.is_symlink and ours.st_mode != theirs.st_mode:
        problems.append(Mismatch(rel, "mode", stat.filemode(ours.st_mode), stat.filemode(theirs.st_mode)))
    if ours.st_mtime_ns != theirs.st_mtime_ns:
        problems.append(Mismatch(rel, "mtime", ours.st_mtime_ns, theirs.st_mtime_ns))
    if entry.is_file and ours.st_size != theirs.st_size:
        problems.append(Mismatch(rel, "size", ours.st_size, theirs.st_size))
    if stat.S_ISCHR(ours.st_mode) or stat.S_ISBLK(ours.st_mode):
        if ours.st_rdev != theirs.st_rdev:
            problems.append(Mismatch(rel, "device", ours.st_rdev, theirs.st_rdev))
    return problems + _compare_xattrs(rel, entry.xattrs, found.xattrs, skipped)


def _compare_xattrs(rel: str, ours: xattrs.Xattrs, theirs: xattrs.Xattrs,
                    skipped: frozenset[tuple[str, str]]) -> list[Mismatch]:
    problems = []
    for name in sorted(set(ours) | set(theirs)):
        if ours.get(name) != theirs.get(name) and (rel, name) not in skipped:
            problems.append(Mismatch(rel, "acl" if name in xattrs.ACLS else "xattr",
                                     xattrs.shown(name, ours.get(name)), xattrs.shown(name, theirs.get(name))))
    return problems


def _compare_targets(rel: str, source_root: str, destination_root: str) -> list[Mismatch]:
    ours, theirs = os.readlink(join(source_root, rel)), os.readlink(join(destination_root, rel))
    return [Mismatch(rel, "target", ours, theirs)] if ours != theirs else []


def _hardlink_mismatches(entries: list[Entry], destination_root: str) -> list[Mismatch]:
    """Names that share an inode at the source must share one at the destination (and only with each other)."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for entry in entries:
        if entry.is_file and entry.st.st_nlink > 1:
            groups[entry.inode].append(entry.rel)
    problems = []
    for names in groups.values():
        inodes = set()
        for rel in names:
            try:
                st = os.lstat(join(destination_root, rel))
            except FileNotFoundError:
                continue  # reported as missing already
            inodes.add((st.st_dev, st.st_ino, st.st_nlink))
        if len(inodes) > 1 or any(nlink != len(names) for _, _, nlink in inodes):
            problems.append(Mismatch(names[0], "hardlinks", ", ".join(names), f"{len(inodes)} distinct inodes"))
    return problems
