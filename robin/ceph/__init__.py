"""The only package that imports the Ceph bindings (rados, rbd, cephfs).

Everything outside sees robin.ceph errors (plain CephErrors: errno, operation, target; no HTTP, which
robin.errors maps them to), plain Python values and the connection registry; no binding exception
escapes this package.
"""
from robin.ceph.connection import CephConnection, CephConnections
from robin.ceph.errors import (
    CephAlreadyExists,
    CephBusy,
    CephError,
    CephHasSnapshots,
    CephInvalidArgument,
    CephNotConnected,
    CephNotFound,
    CephUnavailable,
)

__all__ = [
    "CephAlreadyExists", "CephBusy", "CephConnection", "CephConnections", "CephError", "CephHasSnapshots",
    "CephInvalidArgument", "CephNotConnected", "CephNotFound", "CephUnavailable",
]
