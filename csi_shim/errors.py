"""gRPC status codes for what goes wrong, as the CSI spec assigns them."""
from __future__ import annotations

import functools
import logging
import time

import grpc

from robin.client import RobinApiError
from robin.mounts import errors as mount_errors
from robin.mounts.errors import MountError

# robin's stable error codes -> the CSI code a CO acts on.
_BY_ROBIN_CODE = {
    "quota_exceeded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "name_taken": grpc.StatusCode.ALREADY_EXISTS,
    "snapshot_exists": grpc.StatusCode.ALREADY_EXISTS,
    "validation_error": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_request": grpc.StatusCode.INVALID_ARGUMENT,
    "shrink_not_allowed": grpc.StatusCode.OUT_OF_RANGE,
    "volume_busy": grpc.StatusCode.ABORTED,
    "ceph_busy": grpc.StatusCode.FAILED_PRECONDITION,
    "volume_in_use": grpc.StatusCode.FAILED_PRECONDITION,
    "volume_has_snapshots": grpc.StatusCode.FAILED_PRECONDITION,
    "volume_has_clones": grpc.StatusCode.FAILED_PRECONDITION,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
}


# What went wrong staging a volume on a node -> the code the CSI spec gives it.
_BY_MOUNT_KIND = {
    mount_errors.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    mount_errors.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    mount_errors.OCCUPIED: grpc.StatusCode.ALREADY_EXISTS,
    mount_errors.REFUSED: grpc.StatusCode.FAILED_PRECONDITION,
    mount_errors.IN_PROGRESS: grpc.StatusCode.ABORTED,
    mount_errors.FAILED: grpc.StatusCode.INTERNAL,
}


class CsiError(Exception):
    """Ends a call with `code` and `message` (raised anywhere below a servicer method)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.FAILED_PRECONDITION, message)


def from_robin(exc: RobinApiError) -> CsiError:
    if exc.code in _BY_ROBIN_CODE:
        code = _BY_ROBIN_CODE[exc.code]
    elif exc.status == 404:
        code = grpc.StatusCode.NOT_FOUND
    elif exc.status == 0 or exc.status >= 500:
        code = grpc.StatusCode.UNAVAILABLE
    else:
        code = grpc.StatusCode.INTERNAL
    return CsiError(code, f"robin: {exc.explanation}")


def from_mount(exc: MountError) -> CsiError:
    return CsiError(_BY_MOUNT_KIND[exc.kind], exc.message)


log = logging.getLogger("csi_shim")


def csi_service(cls):
    """Class decorator: every RPC method (CamelCase) ends a failed call with its CSI status code, and is logged."""
    for name, method in list(vars(cls).items()):
        if callable(method) and name[:1].isupper():
            setattr(cls, name, _guarded(name, method))
    return cls


def _guarded(name: str, method):
    @functools.wraps(method)
    def call(self, request, context):
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return method(self, request, context)
        except CsiError as exc:
            code = exc.code
            context.abort(exc.code, exc.message)
        except (RobinApiError, MountError) as exc:
            error = from_robin(exc) if isinstance(exc, RobinApiError) else from_mount(exc)
            code = error.code
            context.abort(error.code, error.message)
        finally:
            log.info("%s %s %.1f ms", name, code.name, (time.perf_counter() - start) * 1000)
    return call
