"""robin serve's gunicorn worker: gunicorn's gthread worker, telling the arbiter it is alive at most twice a second.

gthread's main thread tells the arbiter it is alive (an `os.utime` of the worker's heartbeat file) on every turn of
its event loop, which turns at least twice per request: once to hand the request to a thread, once to take the
connection back. The call releases the interpreter's lock, and retaking it waits for whichever request thread
holds it, up to the switch interval (5 ms): each request's hand-over and each kept-alive connection's return to the
poller paid that wait under load (BENCHMARKS.md, "Where a create's time goes under gunicorn"). The arbiter only
needs a sign of life within its timeout (robin serve gives it over a minute), so one every half second is enough.
"""
from __future__ import annotations

import time

from gunicorn.workers import gthread

NOTIFY_EVERY_S = 0.5  # well inside any timeout robin serve gives the arbiter (3 x the Ceph timeout + 30 s)


class ThreadWorker(gthread.ThreadWorker):
    _notified_at = float("-inf")

    def notify(self):
        now = time.monotonic()
        if now - self._notified_at >= NOTIFY_EVERY_S:
            self._notified_at = now
            super().notify()
