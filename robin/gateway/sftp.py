"""The SFTP server of one session: every path the client names stays inside its volume's mount.

asyncssh's own `chroot` only rewrites paths as text: `..` and absolute paths stay inside, but a
symlink inside the mount that points outside (`x -> /etc`, perhaps written by a pod) is followed. So
every path here goes through ConfinedRoot (openat2 with RESOLVE_IN_ROOT), and `map_path`, which
asyncssh's default methods use, refuses: an operation not overridden below fails rather than escapes.

Files are created with the gateway's own user (root): set-user-ID and set-group-ID bits are
dropped, so nobody can leave a set-uid-root program on a volume for a node to run.
"""
from __future__ import annotations

import io
import os
import stat
from collections.abc import AsyncIterator

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


class ConfinedSFTPServer(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, root: str):
        super().__init__(chan)
        self._root = ConfinedRoot(root)

    def map_path(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("operation not supported by robin's gateway")

    def exit(self) -> None:
        self._root.close()

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> io.FileIO:
        access = _ACCESS.get(pflags & (asyncssh.FXF_READ | asyncssh.FXF_WRITE), os.O_RDONLY)
        flags = access
        for pflag, flag in _OPTIONS.items():
            flags |= flag if pflags & pflag else 0
        fd = self._root.open(path, flags, _safe_mode(attrs.permissions, 0o666))
        return io.FileIO(fd, _FILE_MODE[access])

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs):
        raise asyncssh.SFTPOpUnsupported("SFTP version 3 only")  # the server never offers 5 or 6

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

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        for name in self._list(path):
            yield name

    def _list(self, path: bytes) -> list[SFTPName]:
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


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
