"""Stamps inside robin serve's worker for benchmarks/create_timeline.py: never imported by robin itself.

create_timeline.py starts robin serve with a `sitecustomize.py` of its own first on PYTHONPATH, which calls
install() when ROBIN_BENCH_TIMELINE names a directory. install() wraps gunicorn's gthread worker (the poller's
hand-over, the request thread's pick-up, the request's parsing and its answer) and, once the worker has loaded the
app, robin's create path (authentication, the service's create, its two transactions, the Ceph call on both sides of
the lane's hand-over, the image's create and its owner mark). Each stamp is perf_counter (CLOCK_MONOTONIC, the same
clock in every process of the host, so the client's stamps line up with the server's) and the stamping thread's
CPU time. A request carrying X-Bench-Seq has its stamps appended as one JSON line to <directory>/<pid>.jsonl after
its answer is written.
"""
from __future__ import annotations

import functools
import json
import os
import threading
import time

ENV = "ROBIN_BENCH_TIMELINE"
_local = threading.local()  # the request a thread works for: its request thread's, and its lane thread's call
_enqueued: dict[int, float] = {}  # id(connection) -> when the poller handed it to the thread pool


class Record:
    def __init__(self):
        self.seq: str | None = None
        self.stamps: dict[str, tuple[float, float]] = {}
        self.sql: list[tuple[str, float, float]] = []  # (statement's first word, wall before, wall after)

    def stamp(self, name: str) -> None:
        self.stamps[name] = (time.perf_counter(), time.thread_time())


def stamp(name: str) -> None:
    record = getattr(_local, "record", None)
    if record is not None:
        record.stamp(name)


def stamped(before: str, after: str):
    """A decorator: `before` and `after` stamped around the call, on the calling thread."""
    def wrap(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            stamp(before)
            try:
                return fn(*args, **kwargs)
            finally:
                stamp(after)
        return wrapper
    return wrap


def install() -> None:
    directory = os.environ.get(ENV)
    if not directory:
        return
    from gunicorn.workers import base, gthread

    worker = gthread.ThreadWorker
    enqueue_req, handle, handle_request = worker.enqueue_req, worker.handle, worker.handle_request
    load_wsgi = base.Worker.load_wsgi

    def timed_enqueue_req(self, conn):
        _enqueued[id(conn)] = time.perf_counter()
        return enqueue_req(self, conn)

    def timed_handle(self, conn):
        record = _local.record = Record()
        enqueued = _enqueued.pop(id(conn), None)
        record.stamp("picked")
        try:
            return handle(self, conn)
        finally:
            _local.record = None
            if record.seq is not None:
                if enqueued is not None:
                    record.stamps["enqueued"] = (enqueued, None)
                _write(directory, record)

    def timed_handle_request(self, req, conn):
        record = getattr(_local, "record", None)
        if record is not None:
            record.seq = next((value for name, value in req.headers if name == "X-BENCH-SEQ"), None)
            record.stamp("parsed")
        try:
            return handle_request(self, req, conn)
        finally:
            stamp("written")

    def timed_load_wsgi(self):
        load_wsgi(self)
        self.wsgi = stamped("app_in", "app_out")(self.wsgi)
        _wrap_robin()

    worker.enqueue_req, worker.handle, worker.handle_request = timed_enqueue_req, timed_handle, timed_handle_request
    base.Worker.load_wsgi = timed_load_wsgi


def _wrap_robin() -> None:
    import flask
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from robin.auth import service as auth
    from robin.ceph import connection, rbd_ops
    from robin.volumes import service

    auth.authenticate = stamped("auth_in", "auth_out")(auth.authenticate)
    service.create = stamped("create_in", "create_out")(service.create)
    service.reserve_new = stamped("reserve_in", "reserve_out")(service.reserve_new)
    service.set_state = stamped("set_state_in", "set_state_out")(service.set_state)
    rbd_ops._set_owner = stamped("owner_in", "owner_out")(rbd_ops._set_owner)
    make_owned, call = rbd_ops._make_owned, connection.CephConnection.call

    def timed_make_owned(ioctx, pool, name, owner, metadata, make):
        return make_owned(ioctx, pool, name, owner, metadata, stamped("make_in", "make_out")(make))

    def timed_call(self, op, what, fn, *args, **kwargs):
        record = getattr(_local, "record", None)
        if record is None:
            return call(self, op, what, fn, *args, **kwargs)

        def on_lane(handle):
            _local.record = record
            record.stamp("lane_in")
            try:
                return fn(handle)
            finally:
                record.stamp("lane_out")
                _local.record = None

        record.stamp("call_in")
        try:
            return call(self, op, what, on_lane, *args, **kwargs)
        finally:
            record.stamp("call_out")

    rbd_ops._make_owned, connection.CephConnection.call = timed_make_owned, timed_call
    # Flask's own steps around the view: the before_request hooks (authentication among them), the after_request
    # hooks (metrics, access log, audit) and the teardown.
    app = flask.Flask
    app.preprocess_request = stamped("before_in", "before_out")(app.preprocess_request)
    app.process_response = stamped("after_in", "after_out")(app.process_response)
    app.do_teardown_request = stamped("teardown_in", "teardown_out")(app.do_teardown_request)

    # The database driver's own time: each statement's execute, and each commit (SQLAlchemy's commit event comes
    # just before the driver's commit, whose end is the transaction's end).
    @event.listens_for(Engine, "before_cursor_execute")
    def _before(_conn, _cursor, statement, *_):
        record = getattr(_local, "record", None)
        if record is not None:
            record.sql.append([statement.split(None, 1)[0], time.perf_counter(), None])

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(*_):
        record = getattr(_local, "record", None)
        if record is not None and record.sql:
            record.sql[-1][2] = time.perf_counter()

    @event.listens_for(Engine, "commit")
    def _commit(_conn):
        record = getattr(_local, "record", None)
        if record is not None:
            record.sql.append(["COMMIT", time.perf_counter(), None])


def _write(directory: str, record: Record) -> None:
    line = json.dumps({"seq": record.seq, "stamps": record.stamps, "sql": record.sql}) + "\n"
    fd = os.open(os.path.join(directory, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
