"""Fault injection: failing requests (500/429...), dropped watches, expired resourceVersions."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .errors import ApiError

_REASONS = {429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
            500: ("InternalError", "an error on the server (\"injected fault\") has prevented the request from "
                                   "succeeding"),
            503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504: ("Timeout", "the server was unable to return a response in the time allotted")}


@dataclass
class _Failure:
    status: int
    remaining: int | None
    until: float | None
    retry_after: int | None
    path_contains: str | None
    method: str | None


class Faults:
    """Thread-safe. `failed` counts the requests answered with an injected error."""

    def __init__(self, store):
        self._store = store
        self._lock = threading.Lock()
        self._failure: _Failure | None = None
        self.failed = 0

    def fail_requests(self, status: int = 500, count: int | None = None, seconds: float | None = None,
                      retry_after: int | None = None, path_contains: str | None = None,
                      method: str | None = None) -> None:
        """Answers the next `count` API requests (or all for `seconds`, or both: whichever ends first; neither:
        until clear()) with `status` (a Status object; `Retry-After` header if retry_after, default 1 for 429).
        Only requests whose path contains `path_contains` / whose method is `method`, when given."""
        if retry_after is None and status == 429:
            retry_after = 1
        with self._lock:
            self._failure = _Failure(status, count, time.monotonic() + seconds if seconds is not None else None,
                                     retry_after, path_contains, method.upper() if method else None)

    def clear(self) -> None:
        with self._lock:
            self._failure = None

    def drop_watches(self, abruptly: bool = False) -> None:
        """Ends every open watch: cleanly (final chunk, as a server-side timeout does) or abruptly
        (TCP connection shut down mid-stream)."""
        self._store.end_watches(abruptly)

    def hold_watches(self, rt, at: int | None = None) -> int:
        """Watches of resource `rt` deliver no event past resourceVersion `at` (default: the current one) until
        release_watches(): a watch lagging behind the store, as a client's informer cache lags behind a real server
        under load. Nothing is lost: the held events follow, in order, once released. Returns `at`."""
        with self._store.lock:
            at = self._store.rv if at is None else at
            self._store.watch_holds[rt.plural] = at
            return at

    def release_watches(self) -> None:
        with self._store.lock:
            self._store.watch_holds.clear()
            self._store.notify_all()

    def compact(self, keep: int = 0) -> int:
        """Expires resourceVersions: watches from an rv older than the kept history get a 410 ERROR event,
        continue tokens from before get 410. Returns the newest expired resourceVersion."""
        return self._store.compact(keep)

    def short_pages(self, limit: int) -> None:
        """Lists that ask for a limit get pages of at most `limit` items (0: as many as asked for), each with a
        continue token while more remain: clients must follow `continue`, not count on full pages."""
        with self._store.lock:
            self._store.page_limit = limit

    def controllers(self, delay: float | None = None, paused: bool | None = None) -> None:
        """Slows the controllers down (`delay` seconds between a controller's reads and its writes, in which a
        client's write makes the controller's meet a 409) or stops them (`paused`) until told otherwise."""
        self._store.controllers.configure(delay, paused)

    def check(self, method: str, path: str) -> None:
        """Raises the injected ApiError if this request must fail."""
        with self._lock:
            failure = self._failure
            if failure is None:
                return
            if (failure.until is not None and time.monotonic() >= failure.until) or failure.remaining == 0:
                self._failure = None
                return
            if (failure.path_contains and failure.path_contains not in path) or (
                    failure.method and failure.method != method):
                return
            if failure.remaining is not None:
                failure.remaining -= 1
            self.failed += 1
        reason, message = _REASONS.get(failure.status, ("InternalError", "injected fault"))
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        details = {"retryAfterSeconds": failure.retry_after} if failure.retry_after is not None else None
        raise ApiError(failure.status, reason, message, details, headers)

    def state(self) -> dict:
        with self._lock:
            failure = self._failure
            return {"failed": self.failed, "failing": None if failure is None else {
                "status": failure.status, "remaining": failure.remaining,
                "seconds": None if failure.until is None else max(0.0, failure.until - time.monotonic())},
                "pageLimit": self._store.page_limit, "watchHolds": dict(self._store.watch_holds),
                "controllers": {"delay": self._store.controllers.delay, "paused": self._store.controllers.paused,
                                "conflicts": self._store.controllers.conflicts}}
