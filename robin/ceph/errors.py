"""Binding errors translated where they are raised, errno kept, as plain errors: what failed (the
operation, the cluster it went to, the errno) and nothing of HTTP. The API answers them through the
one table in robin.errors; services branch on these classes."""
from __future__ import annotations

import errno as errnos
from collections.abc import Iterator
from contextlib import contextmanager

import cephfs
import rados
import rbd


class CephError(Exception):
    """A Ceph call failed. `operation` is the call robin made (as its metrics name it), `target` the
    cluster it went to; `details` is what may be told beside the message (the errno, the image...)."""

    def __init__(self, message: str, *, errno: int | None = None, operation: str | None = None,
                 target: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.operation = operation
        self.target = target
        self.details = details or {}


class CephNotFound(CephError):
    pass


class CephAlreadyExists(CephError):
    pass


class CephBusy(CephError):
    pass


class CephHasSnapshots(CephError):
    pass


class CephInvalidArgument(CephError):
    pass


class CephNoSpace(CephError):
    pass


class CephPermissionDenied(CephError):
    """robin's own Ceph user lacks caps."""


class CephUnavailable(CephError):
    """Ceph did not answer (in time)."""


class CephNotConnected(CephUnavailable):
    """No connection could be made, so no operation reached the cluster: nothing to undo."""


class CephNotAuthorized(CephPermissionDenied, CephNotConnected):
    """The monitors refused robin's user (an unknown user, a wrong key): no connection, as CephNotConnected, but
    answered as the deployment problem it is, not as an outage."""


_BY_ERRNO: dict[int, type[CephError]] = {
    errnos.ENOENT: CephNotFound,
    errnos.EEXIST: CephAlreadyExists,
    errnos.EBUSY: CephBusy,
    errnos.EAGAIN: CephBusy,  # the mgr's volumes module: a clone under way, a snapshot with pending clones
    errnos.ENOTEMPTY: CephHasSnapshots,
    errnos.EINVAL: CephInvalidArgument,
    errnos.EDOM: CephInvalidArgument,
    errnos.ERANGE: CephInvalidArgument,
    errnos.ENOSPC: CephNoSpace,
    errnos.EDQUOT: CephNoSpace,
    errnos.EPERM: CephPermissionDenied,
    errnos.EACCES: CephPermissionDenied,
    errnos.ETIMEDOUT: CephUnavailable,
    errnos.ESHUTDOWN: CephUnavailable,
    errnos.ENOTCONN: CephUnavailable,
    errnos.EINTR: CephUnavailable,
}


def translate(exc: Exception, what: str, *, operation: str | None = None, target: str | None = None) -> CephError:
    errno = getattr(exc, "errno", None)
    if errno is not None and errno < 0:
        errno = -errno
    kind = _BY_ERRNO.get(errno, CephError)
    reason = errnos.errorcode.get(errno, "error") if errno else type(exc).__name__
    return kind(f"{what}: {reason} ({exc})", errno=errno, operation=operation, target=target,
                details={"errno": errno} if errno else {})


@contextmanager
def translated(what: str, *, operation: str | None = None, target: str | None = None) -> Iterator[None]:
    """Turn any rados/rbd/cephfs error raised inside into the matching CephError, naming `what`; a
    CephError raised inside (robin's own checks) is told the operation and target too."""
    try:
        yield
    except (rados.Error, rbd.Error, cephfs.Error) as exc:
        raise translate(exc, what, operation=operation, target=target) from exc
    except CephError as exc:
        if exc.operation is None:
            exc.operation, exc.target = operation, target
        raise
