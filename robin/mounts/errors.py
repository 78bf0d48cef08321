"""What goes wrong staging a volume, in words of its own: each caller picks its answer from the `kind` (the CSI
node a gRPC status, the gateway an API error, the migration a report code)."""
from __future__ import annotations

# The kinds, from the caller's mistake to the machine's:
INVALID = "invalid"  # the request cannot be right: a missing or malformed argument
NOT_FOUND = "not_found"  # the image, the CephFS path or the mount it names is not there
OCCUPIED = "occupied"  # the path (or the volume) already holds something else
REFUSED = "refused"  # not in this state: still in use, not staged, holds data but no known file system
IN_PROGRESS = "in_progress"  # another operation on the same volume is running
FAILED = "failed"  # a command failed or timed out, a path could not be made: the machine's trouble
KINDS = (INVALID, NOT_FOUND, OCCUPIED, REFUSED, IN_PROGRESS, FAILED)


class MountError(Exception):
    def __init__(self, kind: str, message: str):
        if kind not in KINDS:
            raise ValueError(kind)
        super().__init__(message)
        self.kind, self.message = kind, message
