"""robin serve's gunicorn worker: gunicorn's gthread worker, telling the arbiter it is alive at most twice a second,
and serving a kept-alive connection's next request on the thread that answered the last one when it is already
there or arrives within a short linger.

Heartbeats: gthread's main thread tells the arbiter it is alive (an `os.utime` of the worker's heartbeat file) on
every turn of its event loop, which turns at least twice per request: once to hand the request to a thread, once to
take the connection back. The call releases the interpreter's lock, and retaking it waits for whichever request
thread holds it, up to the switch interval (5 ms): each request's hand-over and each kept-alive connection's return
to the poller paid that wait under load (BENCHMARKS.md, "Where a create's time goes under gunicorn"). The arbiter
only needs a sign of life within its timeout (robin serve gives it over a minute), so one every half second is
enough.

Linger: after a kept-alive answer, gthread hands the connection back to its main thread (a queue and a pipe), which
registers it with its poller, waits for its next request, unregisters it and hands it to a pool thread again: two
thread switches and two `epoll_ctl` per request. A client issuing requests back to back (the provisioner, a CSI
node, a script) sends the next one within a fraction of a millisecond, so the answering thread waits for it briefly
itself (LINGER_S) and serves it directly. It only does so while no connection waits for a thread: it does not
linger when work is queued, and a lingering thread is woken (a pipe it polls beside the connection) as soon as the
main thread queues work. Whatever does not arrive in the linger goes back to the poller as in gthread, with all of
gthread's limits (keep-alive timeout, `max_keepalived`, `max_requests`, graceful stop) unchanged: every request is
still served by gthread's `handle`, and the linger is never used on TLS (a TLS record may be buffered where polling
the socket cannot see it) nor by a stopping worker.
"""
from __future__ import annotations

import os
import select
import threading
import time

from gunicorn.workers import gthread

NOTIFY_EVERY_S = 0.5  # well inside any timeout robin serve gives the arbiter (3 x the Ceph timeout + 30 s)
# Long enough for a back-to-back client's next request on a loaded machine, short enough that a thread is not held
# for a client that is merely keeping its connection open (BENCHMARKS.md, "the server stack's share of a write").
LINGER_S = 0.002


class ThreadWorker(gthread.ThreadWorker):
    _notified_at = float("-inf")
    linger_s = LINGER_S

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._linger_lock = threading.Lock()
        self._queued = 0  # connections handed to the pool and not yet taken by a thread
        self._lingering = 0  # threads waiting for their connection's next request
        self._wake_r = self._wake_w = None

    def init_process(self):
        # Made in the worker, after the fork; the wake-up byte is written only while a thread lingers.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        super().init_process()

    def notify(self):
        now = time.monotonic()
        if now - self._notified_at >= NOTIFY_EVERY_S:
            self._notified_at = now
            super().notify()

    def enqueue_req(self, conn):
        with self._linger_lock:
            self._queued += 1
            if self._lingering:
                try:
                    os.write(self._wake_w, b"\0")  # the lingering threads give way to this connection
                except BlockingIOError:
                    pass  # already a byte there: they are woken anyway
        super().enqueue_req(conn)

    def handle(self, conn):
        """gthread's handle, then the connection's next requests on this thread for as long as each comes within
        the linger; what it returns last goes to gthread's finish_request as before."""
        with self._linger_lock:
            self._queued -= 1
        keepalive = super().handle(conn)
        while keepalive is True and self._next_request_ready(conn):
            keepalive = super().handle(conn)
        return keepalive

    def _next_request_ready(self, conn) -> bool:
        """Whether the connection's next request is here, waiting up to the linger for it: False sends the
        connection back to gthread's poller."""
        if not self.linger_s or not self.alive or self.cfg.is_ssl or conn.is_http2:
            return False
        with self._linger_lock:
            if self._queued:
                return False  # back to gthread, which queues it behind the connections already waiting
            if conn.parser.unreader.buf.getvalue():
                return True  # read ahead with the last request's body: the next request is here
            self._lingering += 1
        try:
            poll = select.poll()
            poll.register(conn.sock, select.POLLIN)
            poll.register(self._wake_r, select.POLLIN)
            ready = {fd for fd, _ in poll.poll(self.linger_s * 1000)}
        finally:
            with self._linger_lock:
                self._lingering -= 1
                if not self._lingering:
                    self._drain_wake_ups()
        return conn.sock.fileno() in ready and self._wake_r not in ready

    def _drain_wake_ups(self):
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass
