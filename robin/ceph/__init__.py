"""The only package that imports the Ceph bindings (rados, rbd, cephfs).

Everything outside sees robin.ceph errors (RobinError subclasses with the errno kept), plain Python
values and the connection registry; no binding exception escapes this package.
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
