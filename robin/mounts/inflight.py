"""One operation at a time per key (a volume's id, a request's name): a second one at once is refused with
MountError IN_PROGRESS, for its caller to retry; the CSI spec answers it with ABORTED, which the CO retries,
instead of running both."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from robin.mounts.errors import IN_PROGRESS, MountError


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
                raise MountError(IN_PROGRESS, f"an operation on {busy[0]} is already in progress")
            self._keys.update(keys)
        try:
            yield
        finally:
            with self._lock:
                self._keys.difference_update(keys)
