"""Client paths resolved by the kernel inside one directory: openat2(2) with RESOLVE_IN_ROOT.

The root stands for "/" in every path a client names and in every symlink met on the way: `..` stops
at it, and absolute paths and absolute symlink targets start from it. The kernel resolves a path in
one step, so a symlink swapped in meanwhile (say by a pod writing the same CephFS directory) cannot
lead outside, as it could between a realpath() check and the open that follows it.

Operations that act on a name rather than what it points to (remove, rename, mkdir, readlink, ...)
resolve the parent this way and act on the last component relative to it, a single name that is
never `..` (paths are normalised first).
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager

# Linux >= 5.6. System calls added since 5.1 have the same number on every architecture (but alpha).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02  # no /proc/<pid>/fd/... jumps out of the tree
RESOLVE_IN_ROOT = 0x10

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: bytes, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _libc.syscall(SYS_OPENAT2, dir_fd, path, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        error = ctypes.get_errno()
        # EAGAIN: a rename elsewhere raced with resolving `..`; the kernel asks for a retry.
        if error not in (errno.EAGAIN, errno.EINTR):
            raise OSError(error, os.strerror(error), os.fsdecode(path))


def normalize(path: bytes) -> bytes:
    """The client's path as an absolute path under the root, without `.` or `..` components."""
    normal = posixpath.normpath(b"/" + path)
    return b"/" + normal.lstrip(b"/")


def proc_path(fd: int) -> str:
    """A path naming what `fd` refers to, for the calls that take no descriptor (chmod on an O_PATH fd)."""
    return f"/proc/self/fd/{fd}"


class ConfinedRoot:
    """A directory as the root of everything a client names. Holds a descriptor of it until closed."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.host_path = os.fsencode(os.readlink(proc_path(self.fd)))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def open(self, path: bytes, flags: int, mode: int = 0) -> int:
        return openat2(self.fd, normalize(path), flags, mode)

    @contextmanager
    def handle(self, path: bytes, *, follow: bool = True) -> Iterator[int]:
        """An O_PATH descriptor of `path`, or of the symlink itself when `follow` is false."""
        fd = self.open(path, os.O_PATH | (0 if follow else os.O_NOFOLLOW))
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def parent(self, path: bytes) -> Iterator[tuple[int, bytes]]:
        """(descriptor of the parent directory, last component): the root itself is (root, b".")."""
        head, name = posixpath.split(normalize(path))
        fd = self.open(head, os.O_PATH | os.O_DIRECTORY)
        try:
            yield fd, name or b"."
        finally:
            os.close(fd)

    def client_path(self, fd: int) -> bytes:
        """Where `fd` is, as the client names it."""
        host = os.fsencode(os.readlink(proc_path(fd)))
        if host == self.host_path:
            return b"/"
        if not host.startswith(self.host_path.rstrip(b"/") + b"/"):
            raise PermissionError(errno.EACCES, "outside the volume")
        return host[len(self.host_path.rstrip(b"/")):]
