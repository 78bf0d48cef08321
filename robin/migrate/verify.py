"""The verification pass after a copy: the destination read afresh, every entry compared with the source by type,
owner, mode, mtime, extended attributes and POSIX ACLs, every file by size and content, symlinks by target,
device nodes by number, hard links by grouping; and what only the destination has is reported too. Access times
are not compared: reading a file moves its own.

A file the copy found equal at the destination as it wrote it (robin.migrate.copy.Copied: read back chunk by chunk
and compared byte for byte with what it read, unchanged while it was read) is compared by the lstat the copy took
of it, and its content is not read again on either side, as long as the destination file is the very one the copy
compared (the same inode). Every other file (already at the destination, changed while copied, with holes, or
another file found in its place) is read on both sides and compared by SHA-256. The destination's walk and
attributes are always read afresh, other source entries are compared with the copy's walk of the source.
Attributes the destination refused (the copy's `xattrs_refused`) are reported there, and left out here."""
from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from robin.migrate import xattrs
from robin.migrate.copy import Copied, file_digest
from robin.migrate.progress import Progress
from robin.migrate.tree import Entry, Tree, join, scan

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


def verify(source: Tree, destination_root: str, copied: Mapping[tuple[int, int], Copied] | None = None,
           refused: Iterable[tuple[str, str]] = (), parallel: int = 8, keep_at_destination_root=frozenset(),
           progress: Progress | None = None) -> Verification:
    """`source`: the copy's walk of the source; `copied`: what the copy read (Copier.sources); `refused`: the
    (path, attribute name) pairs the destination refused."""
    copied, skipped = copied or {}, frozenset(refused)
    progress = progress or Progress(0, 0, enabled=False)
    found = {entry.rel: entry for entry in scan(destination_root, keep_at_destination_root,
                                                ignored_at_root=xattrs.ROOT_ONLY_OURS).entries}
    result = Verification(entries=len(source.entries))
    to_check: list[tuple[Entry, Entry]] = []
    first_names: set[tuple[int, int]] = set()
    for entry in source.entries:
        theirs = found.get(entry.rel)
        if entry.is_file and theirs is not None and theirs.is_file and entry.inode not in first_names:
            first_names.add(entry.inode)
            to_check.append((entry, theirs))  # compared in the pool, with its content
            continue
        known = copied.get(entry.inode)
        ours = Entry(entry.rel, known.st, entry.xattrs) if known else entry
        result.mismatches.extend(_compare(ours, theirs, skipped))
        if theirs is not None and entry.is_symlink and theirs.is_symlink:
            result.mismatches.extend(_compare_targets(entry.rel, source.root, destination_root))
    listed = {entry.rel for entry in source.entries}
    result.mismatches.extend(Mismatch(rel, "extra") for rel in sorted(set(found) - listed))
    result.mismatches.extend(_hardlink_mismatches(source.entries, found))

    def check(pair: tuple[Entry, Entry]) -> list[Mismatch]:
        try:
            return _check_file(*pair, source.root, destination_root, copied.get(pair[0].inode), skipped)
        except OSError as exc:
            return [Mismatch(pair[0].rel, "error", destination=str(exc))]
        finally:
            progress.add(0, files=1)

    with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="migrate-verify") as pool:
        for (_, theirs), problems in zip(to_check, pool.map(check, to_check), strict=True):
            result.mismatches.extend(problems)
            result.files += 1
            result.bytes += theirs.st.st_size
    return result


def _check_file(entry: Entry, theirs: Entry, source_root: str, destination_root: str, known: Copied | None,
                skipped: frozenset[tuple[str, str]]) -> list[Mismatch]:
    """A file's metadata, the source's as the copy read it or read now if the copy did not; and its content
    unless the copy found this very destination file equal to what it read, by both sides' SHA-256."""
    if known is not None:
        ours, same = Entry(entry.rel, known.st, entry.xattrs), known.same_at == (theirs.st.st_dev, theirs.st.st_ino)
    else:
        path = join(source_root, entry.rel)
        ours, same = Entry(entry.rel, os.lstat(path), xattrs.read(path)), False
    problems = _compare(ours, theirs, skipped)
    if same or any(problem.what in ("type", "size") for problem in problems):
        return problems
    digest, landed = file_digest(join(source_root, entry.rel)), file_digest(join(destination_root, entry.rel))
    if landed != digest:
        problems.append(Mismatch(entry.rel, "content", digest, landed))
    return problems


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


def _hardlink_mismatches(entries: list[Entry], found: dict[str, Entry]) -> list[Mismatch]:
    """Names that share an inode at the source must share one at the destination (and only with each other)."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for entry in entries:
        if entry.is_file and entry.st.st_nlink > 1:
            groups[entry.inode].append(entry.rel)
    problems = []
    for names in groups.values():
        inodes = {(found[rel].st.st_dev, found[rel].st.st_ino, found[rel].st.st_nlink) for rel in names
                  if rel in found}  # a missing name is reported as missing already
        if len(inodes) > 1 or any(nlink != len(names) for _, _, nlink in inodes):
            problems.append(Mismatch(names[0], "hardlinks", ", ".join(names), f"{len(inodes)} distinct inodes"))
    return problems
