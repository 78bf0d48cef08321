"""Binding errors translated where they are raised, errno kept, as HTTP-ready RobinErrors."""
from __future__ import annotations

import errno as errnos
from collections.abc import Iterator
from contextlib import contextmanager

import cephfs
import rados
import rbd

from robin.errors import RobinError


class CephError(RobinError):
    status = 502
    code = "ceph_error"

    def __init__(self, message: str, *, errno: int | None = None, details: dict | None = None):
        super().__init__(message, details=details)
        self.errno = errno


class CephNotFound(CephError):
    status = 404
    code = "ceph_not_found"


class CephAlreadyExists(CephError):
    status = 409
    code = "ceph_already_exists"


class CephBusy(CephError):
    status = 409
    code = "ceph_busy"


class CephHasSnapshots(CephError):
    status = 409
    code = "ceph_has_snapshots"


class CephInvalidArgument(CephError):
    status = 422
    code = "ceph_invalid_argument"


class CephNoSpace(CephError):
    status = 507
    code = "ceph_no_space"


class CephPermissionDenied(CephError):
    # robin's own Ceph user lacks caps: a deployment problem, not the client's.
    status = 502
    code = "ceph_permission_denied"


class CephUnavailable(CephError):
    status = 503
    code = "ceph_unavailable"


class CephNotConnected(CephUnavailable):
    """No connection could be made, so no operation reached the cluster: nothing to undo."""


_BY_ERRNO: dict[int, type[CephError]] = {
    errnos.ENOENT: CephNotFound,
    errnos.EEXIST: CephAlreadyExists,
    errnos.EBUSY: CephBusy,
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


def translate(exc: Exception, what: str) -> CephError:
    errno = getattr(exc, "errno", None)
    if errno is not None and errno < 0:
        errno = -errno
    kind = _BY_ERRNO.get(errno, CephError)
    reason = errnos.errorcode.get(errno, "error") if errno else type(exc).__name__
    return kind(f"{what}: {reason} ({exc})", errno=errno, details={"errno": errno} if errno else {})


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn any rados/rbd/cephfs error raised inside into the matching CephError, naming `what`."""
    try:
        yield
    except (rados.Error, rbd.Error, cephfs.Error) as exc:
        raise translate(exc, what) from exc
