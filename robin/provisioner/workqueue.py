"""A work queue of keys with client-go's guarantees: a key queued many times is handled once; a key is never
handled by two workers at once (one queued while it is being handled waits until done()); failed keys come
back after a per-key exponential delay, which forget() resets."""
from __future__ import annotations

import heapq
import threading
import time
from collections import deque

from robin.provisioner.backoff import Backoff


class WorkQueue:
    def __init__(self, retry_base: float, retry_max: float):
        self._retry_base, self._retry_max = retry_base, retry_max
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()  # queued, not yet handed out
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, str]] = []  # heap of (due, key); stale entries are skipped
        self._due: dict[str, float] = {}  # key -> when it is due: one pending delay per key
        self._backoffs: dict[str, Backoff] = {}
        self._cond = threading.Condition()
        self._shutdown = False

    def add(self, key: str) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: str) -> None:
        if key in self._dirty or self._shutdown:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        """Queues `key` in `delay` seconds; a key already waiting keeps the earlier of the two times."""
        due = time.monotonic() + delay
        with self._cond:
            if self._due.get(key, due + 1) <= due:
                return
            self._due[key] = due
            heapq.heappush(self._delayed, (due, key))
            self._cond.notify()

    def add_rate_limited(self, key: str, at_least: float = 0.0) -> float:
        """Queues `key` again after its next backoff delay (or `at_least`); returns the delay."""
        with self._cond:
            backoff = self._backoffs.setdefault(key, Backoff(self._retry_base, self._retry_max))
        delay = max(backoff.next(), at_least)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        with self._cond:
            self._backoffs.pop(key, None)

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to handle (call done() after), or None on timeout or shutdown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._shutdown:
                    return None
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                now = time.monotonic()
                waits = [w for w in (deadline, self._delayed[0][0] if self._delayed else None) if w is not None]
                if deadline is not None and now >= deadline:
                    return None
                self._cond.wait(max(0.0, min(waits) - now) if waits else None)

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            due, key = heapq.heappop(self._delayed)
            if self._due.get(key) == due:
                del self._due[key]
                self._add(key)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def depth(self) -> int:
        """Keys waiting: queued now or due later."""
        with self._cond:
            return len(self._dirty | self._due.keys())

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
