"""The work dir's locks: one file per source and per destination under <work dir>/locks, flock()ed by the run
that migrates it, and removed by that run when it ends.

Removing a lock file races with another run taking the same lock: that run may have opened the file just before
the holder unlinked it, and then gets the lock of a file no longer in the directory, while a third run creates
the name afresh and locks that one. So the holder unlinks the name *while it still holds the lock*, and a run
that got a lock checks that the name still leads to the file it locked; if not, it drops that lock and tries the
name again. Whoever holds the lock of the file the name leads to is the one holder. A run that was killed leaves
its file behind (the kernel drops its lock): the next run takes it, and removes it when it ends."""
from __future__ import annotations

import fcntl
import os


def take(path: str) -> int | None:
    """Lock `path` (made if need be) for this process: its descriptor, or None while another process holds it."""
    while True:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except (FileNotFoundError, FileExistsError):
            continue  # another run's release removed the directory under these calls (FileExistsError: makedirs
            #           found it, then did not)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _still_named(fd, path):
            return fd
        os.close(fd)  # its holder removed it before ending: the name is free, or someone else's now


def release(path: str, fd: int) -> None:
    """Remove the lock file, then drop the lock, and the locks directory if that was its last file."""
    try:
        os.unlink(path)
    finally:
        os.close(fd)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # other runs' locks are in it (or it is gone already)


def _still_named(fd: int, path: str) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
