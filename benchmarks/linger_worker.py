"""A contender worker class, measured and not taken (BENCHMARKS.md, "the server stack's share of a write, split"):
robin serve's worker, but after a kept-alive answer the thread that gave it waits briefly (`linger_s`) for the
connection's next request and serves it itself, instead of handing the connection back to gthread's poller and on
to a pool thread again (two thread switches and two `epoll_ctl` a request).

Back to back it saved 4 to 4.7 switches and 0.05-0.10 ms of the server's CPU a request; no end-to-end benchmark
could resolve it, so robin serve keeps gthread's path. Compare with `benchmarks/stack_split.py --worker-classes
robin,linger` or `benchmarks/load.py --worker-classes robin,linger,linger,robin`.

It lingers only while no connection waits for a thread (a lingering thread is woken through a pipe as soon as the
main thread queues one), never on TLS or HTTP/2 or in a stopping worker; every request still goes through gthread's
`handle`, with its limits.
"""
from __future__ import annotations

import os
import select
import threading

from robin import gunicorn_worker

LINGER_S = 0.002  # a back-to-back client's next request on a loaded machine


class ThreadWorker(gunicorn_worker.ThreadWorker):
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
