"""Copy a tree from one mounted file system to another, keeping what `cp -a` keeps: content, holes, permission
bits, owners, timestamps (ns), symlinks, hard links, fifos and device nodes, extended attributes and POSIX ACLs
(robin.migrate.xattrs).

It is a mirror, and it can be run again at any time:
- a file whose destination has the same size and mtime is left alone; one of the same size and another mtime is
  compared by checksum, and only re-copied when the content differs;
- a file's mtime is set last, after its data, owner and mode: a destination file with the source's size and mtime
  is therefore complete, and one a killed copy was writing has the time of that write, so the next run copies it
  again. (Writing under a temporary name and renaming it into place would say the same with a name, but a rename
  is a metadata round trip per file that cost a third of the time on small files);
- a destination file with other names (hard links of an earlier run) is unlinked before it is rewritten, so the
  rewrite never changes what its other names hold;
- whatever the destination holds that the source does not (files deleted at the source since the last run) is
  removed, except the names in `keep_at_root` (ext4's lost+found).
Directories get their owners, attributes, modes and times last, deepest first, because adding entries changes a
directory's mtime, and a default ACL set early would be inherited by the entries made in it.
With `read_back`, each chunk of a file without holes is read back from the destination as soon as it is written
and compared byte for byte with the chunk read from the source: the verification's read of the destination, done
while other workers still copy, and no hashing (a byte comparison costs a fraction of what SHA-256 costs on both
sides). `Copier.sources` keeps, per source inode, the state of each file found equal so, and the verification
then reads neither side of it again. Files are copied by a bounded pool of threads: on network file systems the
time goes in round trips, which threads overlap (each I/O call releases the GIL).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from robin.faults import crash_point
from robin.migrate import xattrs
from robin.migrate.progress import Progress
from robin.migrate.tree import Entry, Tree, join

CHUNK = 1 << 20
# A file with no holes larger than this is copied in pieces of this size, several at once (and read back piece by
# piece): one stream per file leaves the cores idle while each waits on a round trip.
SEGMENT = 64 << 20
ZEROS = memoryview(bytes(CHUNK))
QUEUED_PER_WORKER = 4  # files queued ahead of the workers: enough to keep them busy, bounded in memory
DIGEST = "sha256"  # of both sides of a file the copy did not compare as it wrote it


@dataclass
class CopyStats:
    files_copied: int = 0
    files_unchanged: int = 0  # same size and mtime at the destination: not read
    files_same_content: int = 0  # same size, another mtime, equal checksums: only the metadata was set
    files_changed_while_copied: int = 0  # the source changed under the copy: the next run copies them again
    bytes_copied: int = 0  # sizes of the files copied (holes included)
    bytes_written: int = 0  # data written: holes are skipped
    bytes_unchanged: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0
    removed: int = 0  # destination entries the source does not have
    errors: list[dict] = field(default_factory=list)  # {"path", "error"}: each entry that could not be copied
    # {"path", "name", "error"}: each attribute the destination refused (a security.* label, a trusted.* name):
    # the rest of the entry is copied, and the verification leaves exactly these out.
    xattrs_refused: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def error(self, rel: str, exc: OSError) -> None:
        with self._lock:
            self.errors.append({"path": rel, "error": _said(exc)})

    def refused(self, rel: str, refusals: list[tuple[str, OSError]]) -> None:
        with self._lock:
            self.xattrs_refused.extend({"path": rel, "name": name, "error": _said(exc)} for name, exc in refusals)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}


def _said(exc: OSError) -> str:
    return f"{exc.strerror or exc} (errno {exc.errno})"


def file_digest(path: str) -> str:
    """The SHA-256 of a file's content, as `sha256sum` gives it."""
    with open(path, "rb", buffering=0) as handle:
        return hashlib.file_digest(handle, DIGEST).hexdigest()


def _pieces(size: int) -> list[tuple[int, int]]:
    return [(start, min(start + SEGMENT, size)) for start in range(0, size, SEGMENT)]


@dataclass(frozen=True)
class Copied:
    """A source file this run copied and found at the destination whole: its lstat when the copy started (kept
    only when the file did not change while it was read), and `same_at`, the (st_dev, st_ino) of the destination
    file whose content was found equal to what was read: read back chunk by chunk as it was written, or, for a
    file already there, by both sides' SHA-256."""

    st: os.stat_result
    same_at: tuple[int, int]


class Copier:
    def __init__(self, source: str, destination: str, parallel: int = 8, progress: Progress | None = None,
                 keep_at_root: frozenset[str] = frozenset(), always_checksum: bool = False, read_back: bool = False):
        self.source, self.destination = source, destination
        # Compare the content of every file of the same size, not only of those whose mtime differs: for a
        # source changed without moving its mtime (`touch -r`, a restore), which only the verification sees.
        self.always_checksum = always_checksum
        self.read_back = read_back
        self.parallel = max(1, parallel)
        self.progress = progress or Progress(0, 0, enabled=False)
        self.keep_at_root = keep_at_root
        self.stats = CopyStats()
        self.sources: dict[tuple[int, int], Copied] = {}  # by source inode: what the verification need not re-read
        self._piece_pool: ThreadPoolExecutor | None = None  # copies the pieces of large files, while copy() runs

    def copy(self, tree: Tree) -> CopyStats:
        children = _children_by_directory(tree)
        directories = [entry for entry in tree.entries if entry.is_dir]
        links: list[tuple[Entry, str]] = []  # (another name of a file, the name it is copied under)
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="migrate-piece") as self._piece_pool, \
                ThreadPoolExecutor(self.parallel, thread_name_prefix="migrate-copy") as pool:
            try:
                self._walk(directories, children, pool, links)
            except BaseException:
                pool.shutdown(cancel_futures=True)  # interrupted: finish the files in flight, start no more
                raise
        for entry, first in links:
            self._guarded(self._link, entry, first)
        for directory in reversed(directories):
            self._guarded(self._set_directory_metadata, directory)
        self.stats.add(directories=len(directories))
        _syncfs(self.destination)
        return self.stats

    def refused(self) -> set[tuple[str, str]]:
        """(path, attribute name) of each attribute the destination refused."""
        return {(item["path"], item["name"]) for item in self.stats.xattrs_refused}

    def _walk(self, directories: list[Entry], children: dict[str, list[Entry]], pool: ThreadPoolExecutor,
              links: list[tuple[Entry, str]]) -> None:
        """Directory by directory: make subdirectories, remove extras, queue files, defer extra hard-link names."""
        queued = threading.BoundedSemaphore(self.parallel * QUEUED_PER_WORKER)
        first_names: dict[tuple[int, int], str] = {}
        fresh = {""} if not os.listdir(self.destination) else set()
        for directory in directories:
            existing = {} if directory.rel in fresh else self._listing(directory.rel)
            self._remove_extras(directory.rel, existing, children[directory.rel])
            for entry in children[directory.rel]:
                have = existing.get(os.path.basename(entry.rel))
                if entry.is_dir:
                    if self._make_directory(entry, have):
                        fresh.add(entry.rel)
                elif entry.is_file and entry.st.st_nlink > 1 and entry.inode in first_names:
                    links.append((entry, first_names[entry.inode]))
                elif entry.is_file:
                    first_names.setdefault(entry.inode, entry.rel)
                    queued.acquire()
                    inherits = xattrs.ACL_DEFAULT in directory.xattrs
                    pool.submit(self._sync_file, entry, have, inherits).add_done_callback(lambda _: queued.release())
                else:
                    self._guarded(self._sync_other, entry, have)

    # --- directories ------------------------------------------------------------------------------------

    def _listing(self, rel: str) -> dict[str, os.stat_result]:
        found = {}
        with os.scandir(join(self.destination, rel)) as listing:
            for item in listing:
                found[item.name] = item.stat(follow_symlinks=False)
        return found

    def _remove_extras(self, rel: str, existing: dict[str, os.stat_result], wanted: list[Entry]) -> None:
        names = {os.path.basename(entry.rel) for entry in wanted}
        for name, st in existing.items():
            if name in names or (not rel and name in self.keep_at_root):
                continue
            if self._guarded(_remove, join(self.destination, os.path.join(rel, name)), st,
                             rel=os.path.join(rel, name)):
                self.stats.add(removed=1)

    def _make_directory(self, entry: Entry, have: os.stat_result | None) -> bool:
        """Make the directory unless it is there; True when it was made (then it is known to be empty)."""
        path = join(self.destination, entry.rel)
        if have is not None and stat.S_ISDIR(have.st_mode):
            return False
        if have is not None:
            _remove(path, have)
        os.mkdir(path, 0o700)  # its own mode comes last: a read-only directory must still take its entries
        return True

    # --- files ------------------------------------------------------------------------------------------

    def _sync_file(self, entry: Entry, have: os.stat_result | None, inherits: bool = False) -> None:
        """`inherits`: the directory has a default ACL, which a new file at the destination may have inherited."""
        source, target = join(self.source, entry.rel), join(self.destination, entry.rel)
        size = entry.st.st_size
        try:
            if have is not None and stat.S_ISREG(have.st_mode) and have.st_size == size:
                if have.st_mtime_ns == entry.st.st_mtime_ns and not self.always_checksum:
                    # A setfattr or setfacl at the source moves no mtime: the attributes are compared too.
                    self._fix_metadata(entry, target, have)
                    self.stats.add(files_unchanged=1, bytes_unchanged=size)
                    self.progress.add(size, files=1)
                    return
                if file_digest(source) == file_digest(target):
                    self._set_metadata(target, entry, xattrs.read(target))
                    self.sources[entry.inode] = Copied(entry.st, _inode(target))
                    self.stats.add(files_same_content=1, bytes_unchanged=size)
                    self.progress.add(size, files=1)
                    return
            self._copy_file(entry, source, target, have, inherits)
        except OSError as exc:
            self.stats.error(entry.rel, exc)
            self.progress.add(0, files=1)

    def _copy_file(self, entry: Entry, source: str, target: str, have: os.stat_result | None,
                   inherits: bool) -> None:
        if have is not None and (not stat.S_ISREG(have.st_mode) or have.st_nlink > 1):
            _remove(target, have)
        # What a file made now holds: nothing, or the ACLs its directory's default ACL gave it (unknown: removed).
        fresh = {} if have is None and not inherits else None
        source_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            before = os.fstat(source_fd)  # the metadata is the file's as its copy starts
            # Read as well as written when read back: through the descriptor that wrote, no open round trip more.
            mode = os.O_RDWR if self.read_back else os.O_WRONLY
            target_fd = os.open(target, mode | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                written, same = self._copy_data(source_fd, target_fd, before)
                self._set_fd_metadata(target_fd, entry, before, fresh if have is None else xattrs.read(target))
                same_at = _inode_of(target_fd) if same else None
            finally:
                os.close(target_fd)
            after = os.fstat(source_fd)
        finally:
            os.close(source_fd)
        crash_point("migrate.file_copied")
        changed = (after.st_mtime_ns, after.st_size) != (before.st_mtime_ns, before.st_size)
        if same_at and not changed \
                and (before.st_mtime_ns, before.st_size) == (entry.st.st_mtime_ns, entry.st.st_size):
            self.sources[entry.inode] = Copied(before, same_at)
        self.stats.add(files_copied=1, bytes_copied=before.st_size, bytes_written=written,
                       files_changed_while_copied=int(changed))
        self.progress.add(0, files=1)

    def _copy_data(self, source_fd: int, target_fd: int, st: os.stat_result) -> tuple[int, bool]:
        """Copy the data, leaving holes where the source has holes or all-zero chunks; the bytes written, and
        whether every chunk read back equals the chunk read (False unless read_back). A file with holes is not
        read back: reading its holes back as zeros would cost what skipping them saved; the verification reads
        both sides of it."""
        size = st.st_size
        # Asking for holes costs two round trips to the source's servers: only where there can be holes.
        ranges = _data_ranges(source_fd, size) if st.st_blocks * 512 < size else [(0, size)]
        compare = self.read_back and ranges == [(0, size)]
        if ranges == [(0, size)] and size > SEGMENT:
            return self._copy_in_pieces(source_fd, target_fd, size, compare)
        written, same, position = 0, compare, 0
        for start, end in ranges:
            self.progress.add(start - position)  # a hole counts as done
            done, same_here, position = self._copy_range(source_fd, target_fd, start, end, compare)
            written, same = written + done, same and same_here
        self.progress.add(max(0, size - position))
        if written < size:
            os.ftruncate(target_fd, size)  # a hole at the end: no write reached the file's end
        return written, same

    def _copy_in_pieces(self, source_fd: int, target_fd: int, size: int, compare: bool) -> tuple[int, bool]:
        """A large file without holes: its pieces copied (and with `compare` read back) by the piece pool at once."""
        os.ftruncate(target_fd, size)  # the all-zero chunks a piece skips are holes, up to the file's end
        futures = [self._piece_pool.submit(self._copy_range, source_fd, target_fd, start, end, compare)
                   for start, end in _pieces(size)]
        wait(futures)  # all of them, even after one failed: they use the descriptors the caller closes
        pieces = [future.result() for future in futures]
        self.progress.add(sum(end - stopped for (_, end), (_, _, stopped) in zip(_pieces(size), pieces, strict=True)))
        return sum(piece[0] for piece in pieces), all(piece[1] for piece in pieces)

    def _copy_range(self, source_fd: int, target_fd: int, start: int, end: int,
                    compare: bool) -> tuple[int, bool, int]:
        """Copy [start, end) chunk by chunk, an all-zero chunk left a hole; with `compare`, each chunk read back
        once written and compared byte for byte with the chunk read. The bytes written, whether every chunk
        compared equal, and where the copy stopped (before `end` if the source shrank under it)."""
        written, same, position = 0, compare, start
        while position < end:
            chunk = os.pread(source_fd, min(CHUNK, end - position), position)
            if not chunk:
                break  # the source shrank under us: its changed mtime gets it copied again next run
            if chunk != ZEROS[:len(chunk)]:
                _write_all(target_fd, chunk, position)
                crash_point("migrate.chunk_written")
                written += len(chunk)
            # After a difference, the verification reads both sides whole and reports it. (An all-zero chunk at
            # the file's end reads back short, the end being set after: that file is the verification's too.)
            if same:
                same = _reads_back(target_fd, position, chunk)
            position += len(chunk)
            self.progress.add(len(chunk))
        return written, same and position == end, position

    def _link(self, entry: Entry, first: str) -> None:
        target, first_target = join(self.destination, entry.rel), join(self.destination, first)
        try:
            have = os.lstat(target)
        except FileNotFoundError:
            have = None
        if have is not None:
            if (have.st_dev, have.st_ino) == _inode(first_target):
                self.stats.add(hardlinks=1)
                return
            _remove(target, have)
        os.link(first_target, target)
        self.stats.add(hardlinks=1)

    # --- symlinks, fifos, devices -----------------------------------------------------------------------

    def _sync_other(self, entry: Entry, have: os.stat_result | None) -> None:
        source, target = join(self.source, entry.rel), join(self.destination, entry.rel)
        if entry.is_symlink:
            wanted = os.readlink(source)
            same = have is not None and stat.S_ISLNK(have.st_mode) and os.readlink(target) == wanted
        else:
            same = have is not None and stat.S_IFMT(have.st_mode) == stat.S_IFMT(entry.st.st_mode) \
                and have.st_rdev == entry.st.st_rdev
        if not same:
            if have is not None:
                _remove(target, have)
            if entry.is_symlink:
                os.symlink(wanted, target)
            else:
                os.mknod(target, stat.S_IFMT(entry.st.st_mode) | 0o600, entry.st.st_rdev)
        self._set_metadata(target, entry, xattrs.read(target))
        self.stats.add(**({"symlinks": 1} if entry.is_symlink else {"specials": 1}))

    # --- metadata -----------------------------------------------------------------------------------------

    def _set_metadata(self, path: str, entry: Entry, have: xattrs.Xattrs | None) -> None:
        """Owner, then attributes (a chown clears security.capability), then mode (a chown clears set-id bits; an
        ACL sets the group bits to its mask, which are the source's group bits), then times, which any other
        change would move."""
        st = entry.st
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
        self._sync_xattrs(entry, path, have)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _set_fd_metadata(self, fd: int, entry: Entry, st: os.stat_result, have: xattrs.Xattrs | None) -> None:
        """As _set_metadata, through the open file, with `st` (the source as its copy started): the mtime last of
        all (see the module's doc)."""
        os.fchown(fd, st.st_uid, st.st_gid)
        self._sync_xattrs(entry, fd, have)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _set_directory_metadata(self, directory: Entry) -> None:
        path = join(self.destination, directory.rel)
        ignored = xattrs.ROOT_ONLY_OURS if not directory.rel else frozenset()
        self._set_metadata(path, directory, xattrs.read(path, ignored))

    def _fix_metadata(self, entry: Entry, target: str, have: os.stat_result) -> None:
        """An unchanged file whose owner, mode or attributes were changed at the source since it was copied: none
        of these moves an mtime, so only they are compared; a chown moves the ctime alone."""
        st = entry.st
        chowned = (have.st_uid, have.st_gid) != (st.st_uid, st.st_gid)
        if chowned:
            os.chown(target, st.st_uid, st.st_gid)
        present = xattrs.read(target)
        self._sync_xattrs(entry, target, present)
        if have.st_mode != st.st_mode or chowned or present != entry.xattrs:
            os.chmod(target, stat.S_IMODE(st.st_mode))

    def _sync_xattrs(self, entry: Entry, target: str | int, have: xattrs.Xattrs | None) -> None:
        wanted = entry.xattrs
        if not entry.rel and xattrs.ROOT_ONLY_OURS & set(wanted):
            # The source's root carries a name robin marks its volumes with: the destination's own mark stays.
            ours = sorted(xattrs.ROOT_ONLY_OURS & set(wanted))
            wanted = {name: value for name, value in wanted.items() if name not in ours}
            self.stats.refused("", [(name, OSError(errno.EEXIST, "robin's own mark of the volume")) for name in ours])
        if not wanted and have == {}:
            return
        refused = xattrs.apply(target, wanted, have)
        if refused:
            self.stats.refused(entry.rel, refused)

    def _guarded(self, action, entry_or_path, *args, rel: str | None = None) -> bool:
        """Run one entry's step; an OSError is that entry's error (False), and the copy goes on with the others."""
        try:
            action(entry_or_path, *args)
        except OSError as exc:
            name = rel if rel is not None else getattr(entry_or_path, "rel", None)
            if name is None:
                name = os.path.relpath(entry_or_path, self.destination)
            self.stats.error(name, exc)
            return False
        return True


def _children_by_directory(tree: Tree) -> dict[str, list[Entry]]:
    children: dict[str, list[Entry]] = {entry.rel: [] for entry in tree.entries if entry.is_dir}
    for entry in tree.entries[1:]:
        children[os.path.dirname(entry.rel)].append(entry)
    return children


def _data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) ranges holding data, by SEEK_DATA/SEEK_HOLE; the whole file where those are not
    supported (the kernel then reports one data range, or the call fails)."""
    ranges, position = [], 0
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole from here on
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, end))
            position = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
            raise
        return [(0, size)]
    return ranges


def _write_all(fd: int, data: bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, position)
        view, position = view[done:], position + done


def _reads_back(fd: int, position: int, expected: bytes) -> bool:
    """Whether the file open at `fd` holds `expected` at `position`, as read now; False when it cannot be read
    (the verification reads it again and says why)."""
    try:
        found = os.pread(fd, len(expected), position)
        while 0 < len(found) < len(expected):  # a read cut short: the rest
            more = os.pread(fd, len(expected) - len(found), position + len(found))
            if not more:
                break
            found += more
    except OSError:
        return False
    return found == expected  # bytes against bytes: a memcmp


def _inode(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return (st.st_dev, st.st_ino)


def _inode_of(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _remove(path: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(path: str) -> None:
    """Flush the destination's file system (only it, unlike sync(2)): the copy is durable when this returns."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)
