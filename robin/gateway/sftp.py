"""The SFTP server of one session: every path the client names stays inside its volume's mount.

asyncssh's own `chroot` only rewrites paths as text: `..` and absolute paths stay inside, but a
symlink inside the mount that points outside (`x -> /etc`, perhaps written by a pod) is followed. So
every path here goes through ConfinedRoot (openat2 with RESOLVE_IN_ROOT), and `map_path`, which
asyncssh's default methods use, refuses: an operation not overridden below fails rather than escapes.

Files are created with the gateway's own user (root): set-user-ID and set-group-ID bits are
dropped, so nobody can leave a set-uid-root program on a volume for a node to run.

Only regular files are opened. A pod can write a device node (`mknod disk b 7 0`: the host's loop0), a
FIFO (an open that never returns) or a socket into its volume: the path is first opened O_PATH, which
touches no device and waits on no FIFO, its type checked on that descriptor, and only a regular file is
then reopened through it, so nothing can be swapped in between the check and the open.

Every file system call runs in the gateway's bounded pool of I/O threads, never on the event loop: a
file on a hung FUSE mount stalls its own session (asyncssh handles a session's requests one at a time),
while logins, other sessions and the watcher that ends sessions go on.
"""
from __future__ import annotations

import asyncio
import io
import os
import stat
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from robin.gateway.confined import ConfinedRoot, normalize, proc_path

_ACCESS = {asyncssh.FXF_READ: os.O_RDONLY, asyncssh.FXF_WRITE: os.O_WRONLY,
           asyncssh.FXF_READ | asyncssh.FXF_WRITE: os.O_RDWR}
_OPTIONS = {asyncssh.FXF_APPEND: os.O_APPEND, asyncssh.FXF_CREAT: os.O_CREAT, asyncssh.FXF_TRUNC: os.O_TRUNC,
            asyncssh.FXF_EXCL: os.O_EXCL}
_FILE_MODE = {os.O_RDONLY: "rb", os.O_WRONLY: "wb", os.O_RDWR: "r+b"}


def _safe_mode(permissions: int | None, default: int) -> int:
    mode = default if permissions is None else stat.S_IMODE(permissions)
    return mode & ~(stat.S_ISUID | stat.S_ISGID)


def _set_attributes(target: str | int, attrs: SFTPAttrs) -> None:
    """Apply what the client asked for to a path or descriptor (SFTP v3 sends uid+gid, atime+mtime, together)."""
    if attrs.size is not None:
        os.truncate(target, attrs.size)
    if attrs.uid is not None and attrs.gid is not None:
        os.chown(target, attrs.uid, attrs.gid)
    if attrs.permissions is not None:
        os.chmod(target, _safe_mode(attrs.permissions, 0))
    if attrs.atime is not None and attrs.mtime is not None:
        os.utime(target, (attrs.atime, attrs.mtime))


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


def _refuse_unless_regular(fd: int) -> None:
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        raise asyncssh.SFTPPermissionDenied(f"not a regular file: {_KINDS.get(kind, 'a special file')}")


class ConfinedFiles:
    """The session's file system calls, blocking, all confined to the root (ConfinedSFTPServer runs them in its
    thread pool)."""

    def __init__(self, root: str):
        self._root = ConfinedRoot(root)

    def exit(self) -> None:
        self._root.close()

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> io.FileIO:
        access = _ACCESS.get(pflags & (asyncssh.FXF_READ | asyncssh.FXF_WRITE), os.O_RDONLY)
        flags = access
        for pflag, flag in _OPTIONS.items():
            flags |= flag if pflags & pflag else 0
        fd = self._created(path, flags, attrs) if flags & os.O_CREAT else None
        if fd is None:
            fd = self._open_regular(path, flags & ~(os.O_CREAT | os.O_EXCL))
        return io.FileIO(fd, _FILE_MODE[access])

    def _created(self, path: bytes, flags: int, attrs: SFTPAttrs) -> int | None:
        """A new regular file, or None when the name exists and the client did not ask for O_EXCL."""
        try:
            return self._root.open(path, flags | os.O_EXCL, _safe_mode(attrs.permissions, 0o666))
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            return None

    def _open_regular(self, path: bytes, flags: int) -> int:
        with self._root.handle(path) as handle:
            _refuse_unless_regular(handle)
            # The same inode, reopened through its O_PATH descriptor (the /proc link is resolved by the kernel).
            fd = os.open(proc_path(handle), flags | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            _refuse_unless_regular(fd)  # it cannot have changed, but the cost of saying so is one fstat
        except asyncssh.SFTPError:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def close(file_obj: io.FileIO) -> None:
        file_obj.close()

    @staticmethod
    def read(file_obj: io.FileIO, offset: int, size: int) -> bytes:
        return os.pread(file_obj.fileno(), size, offset)

    @staticmethod
    def write(file_obj: io.FileIO, offset: int, data: bytes) -> int:
        # With O_APPEND, Linux's pwrite appends whatever the offset: what SFTP's append flag means.
        view, written = memoryview(data), 0
        while written < len(data):
            written += os.pwrite(file_obj.fileno(), view[written:], offset + written)
        return written

    @staticmethod
    def fstat(file_obj: io.FileIO) -> os.stat_result:
        return os.fstat(file_obj.fileno())

    @staticmethod
    def fstatvfs(file_obj: io.FileIO) -> os.statvfs_result:
        return os.fstatvfs(file_obj.fileno())

    @staticmethod
    def fsync(file_obj: io.FileIO) -> None:
        os.fsync(file_obj.fileno())

    def stat(self, path: bytes) -> os.stat_result:
        with self._root.handle(path) as fd:
            return os.stat(fd)

    def lstat(self, path: bytes) -> os.stat_result:
        with self._root.handle(path, follow=False) as fd:
            return os.stat(fd)

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        with self._root.handle(path) as fd:
            _set_attributes(proc_path(fd), attrs)

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        with self._root.handle(path, follow=False) as fd:
            _set_attributes(proc_path(fd), attrs)

    def fsetstat(self, file_obj: io.FileIO, attrs: SFTPAttrs) -> None:
        _set_attributes(file_obj.fileno(), attrs)

    def statvfs(self, path: bytes) -> os.statvfs_result:
        with self._root.handle(path) as fd:
            return os.statvfs(fd)

    def realpath(self, path: bytes) -> bytes:
        try:
            with self._root.handle(path) as fd:
                return self._root.client_path(fd)
        except FileNotFoundError:
            return normalize(path)  # a name about to be created: what it will be called

    def readlink(self, path: bytes) -> bytes:
        # The target as written: it is resolved inside the volume anyway (an absolute one from its root).
        with self._root.parent(path) as (dir_fd, name):
            return os.readlink(name, dir_fd=dir_fd)

    def list(self, path: bytes) -> list[SFTPName]:
        # Read at once: a generator left half-consumed by the client would keep the directory open.
        names = [SFTPName(b".", attrs=SFTPAttrs.from_local(self.stat(path))),
                 SFTPName(b"..", attrs=SFTPAttrs.from_local(self.stat(path + b"/..")))]
        fd = self._root.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    attrs = SFTPAttrs.from_local(entry.stat(follow_symlinks=False))
                    names.append(SFTPName(os.fsencode(entry.name), attrs=attrs))
        finally:
            os.close(fd)
        return names

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        with self._root.parent(path) as (dir_fd, name):
            os.mkdir(name, _safe_mode(attrs.permissions, 0o777), dir_fd=dir_fd)

    def rmdir(self, path: bytes) -> None:
        with self._root.parent(path) as (dir_fd, name):
            os.rmdir(name, dir_fd=dir_fd)

    def remove(self, path: bytes) -> None:
        with self._root.parent(path) as (dir_fd, name):
            os.unlink(name, dir_fd=dir_fd)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=False)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=True)

    def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        with self._root.parent(oldpath) as (old_dir, old_name), self._root.parent(newpath) as (new_dir, new_name):
            # SFTP's plain rename never overwrites (posix-rename@openssh.com does).
            if not replace and _exists(new_dir, new_name):
                raise asyncssh.SFTPFileAlreadyExists("file already exists")
            os.replace(old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        with self._root.parent(newpath) as (dir_fd, name):
            os.symlink(oldpath, name, dir_fd=dir_fd)

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        with self._root.parent(oldpath) as (old_dir, old_name), self._root.parent(newpath) as (new_dir, new_name):
            os.link(old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir, follow_symlinks=False)


def _off_loop(name: str) -> Callable:
    """ConfinedFiles.<name>, as a coroutine that runs it in the session's thread pool."""
    async def call(self, *args):
        return await self._run(getattr(self._files, name), *args)

    call.__name__ = name
    return call


class ConfinedSFTPServer(asyncssh.SFTPServer):
    """One session's SFTP server: ConfinedFiles' calls, each run in `pool`."""

    def __init__(self, chan: asyncssh.SSHServerChannel, files: ConfinedFiles, pool: Executor):
        super().__init__(chan)
        self._files, self._pool = files, pool

    @classmethod
    async def start(cls, chan: asyncssh.SSHServerChannel, root: str, pool: Executor) -> ConfinedSFTPServer:
        # Even opening the root may hang, on a FUSE mount whose daemon stopped answering.
        files = await asyncio.get_running_loop().run_in_executor(pool, ConfinedFiles, root)
        return cls(chan, files, pool)

    async def _run(self, call: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    def map_path(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("operation not supported by robin's gateway")

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs):
        raise asyncssh.SFTPOpUnsupported("SFTP version 3 only")  # the server never offers 5 or 6

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        for name in await self._run(self._files.list, path):
            yield name

    exit = _off_loop("exit")
    open = _off_loop("open")
    close = _off_loop("close")
    read = _off_loop("read")
    write = _off_loop("write")
    fstat = _off_loop("fstat")
    fsetstat = _off_loop("fsetstat")
    fstatvfs = _off_loop("fstatvfs")
    fsync = _off_loop("fsync")
    stat = _off_loop("stat")
    lstat = _off_loop("lstat")
    setstat = _off_loop("setstat")
    lsetstat = _off_loop("lsetstat")
    statvfs = _off_loop("statvfs")
    realpath = _off_loop("realpath")
    readlink = _off_loop("readlink")
    mkdir = _off_loop("mkdir")
    rmdir = _off_loop("rmdir")
    remove = _off_loop("remove")
    rename = _off_loop("rename")
    posix_rename = _off_loop("posix_rename")
    symlink = _off_loop("symlink")
    link = _off_loop("link")


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
