"""One operation at a time per volume name or id: the CSI spec answers a second concurrent call with ABORTED
(the CO retries it), instead of running both."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from csi_shim.errors import CsiError


class InFlight:
    def __init__(self):
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        keys = tuple(k for k in keys if k)
        with self._lock:
            busy = [k for k in keys if k in self._keys]
            if busy:
                raise CsiError(grpc.StatusCode.ABORTED, f"an operation on {busy[0]} is already in progress")
            self._keys.update(keys)
        try:
            yield
        finally:
            with self._lock:
                self._keys.difference_update(keys)
