"""benchmarks/spread_worker.py, load.py's contender to gunicorn's gthread worker, under real gunicorn on 127.0.0.1:
connections opened at once spread over the workers, and idle keep-alive connections never keep a new one out."""
from __future__ import annotations

import http.client
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.support.gunicorn import running
from tests.support.net import wait_until

WAIT_S = 120

# Each request leaves a mark in ARRIVED, then, if its path is /hold, waits for the test's RELEASE file; it answers
# its worker's pid. Polling a file: the requests are in other processes.
APP = '''
import os, time, uuid
from pathlib import Path

DIRECTORY = Path(os.environ["TEST_WORKER_DIR"])


def app(environ, start_response):
    (DIRECTORY / "arrived" / uuid.uuid4().hex).touch()
    if environ["PATH_INFO"] == "/hold":
        while not (DIRECTORY / "release").exists():
            time.sleep(0.01)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@contextmanager
def gunicorn(tmp_path: Path, workers: int, threads: int):
    """gunicorn with the spreading worker and the app above; stopped afterwards."""
    (tmp_path / "arrived").mkdir()
    with running(tmp_path, APP, "benchmarks.spread_worker.ThreadWorker", workers, threads, "--keep-alive", "300",
                 env={"TEST_WORKER_DIR": str(tmp_path)}) as (port, _log):
        yield port


def arrived(directory: Path) -> int:
    return len(list((directory / "arrived").iterdir()))


def connection(stack: ExitStack, port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    stack.callback(conn.close)
    return conn


def answer(conn: http.client.HTTPConnection) -> int:
    response = conn.getresponse()
    assert response.status == 200
    return int(response.read())


@pytest.mark.timeout(300)
def test_connections_opened_at_once_spread_over_the_workers(tmp_path):
    """Eight requests held open, on eight connections opened together, against 4 workers x 2 threads: each worker
    takes two, its threads' worth; gunicorn's gthread worker let the first worker awake take more, queueing them
    behind its two threads (where these held requests would never arrive)."""
    with gunicorn(tmp_path, workers=4, threads=2) as port, ExitStack() as stack:
        connections = [connection(stack, port) for _ in range(8)]
        for conn in connections:
            conn.request("GET", "/hold")
        wait_until(lambda: arrived(tmp_path) == 8, WAIT_S, "all eight requests in the app")
        (tmp_path / "release").touch()
        pids = Counter(answer(conn) for conn in connections)
        assert sorted(pids.values()) == [2, 2, 2, 2], pids
        # Kept alive, each connection stays with its worker.
        for conn in connections:
            conn.request("GET", "/")
        assert Counter(answer(conn) for conn in connections) == pids


@pytest.mark.timeout(300)
def test_idle_keep_alive_connections_do_not_keep_new_ones_out(tmp_path):
    """One worker with one thread holds sixteen idle keep-alive connections (CSI nodes, the provisioner between
    their requests) and still answers a new connection; at its cap (its thread busy), a new connection waits for
    the busy request, not for an idle connection's keep-alive timeout, and every connection still answers."""
    with gunicorn(tmp_path, workers=1, threads=1) as port, ExitStack() as stack:
        idle = [connection(stack, port) for _ in range(16)]
        for conn in idle:
            conn.request("GET", "/")
            answer(conn)
        fresh = connection(stack, port)
        fresh.request("GET", "/")
        answer(fresh)

        held, waiting = connection(stack, port), connection(stack, port)
        held.request("GET", "/hold")
        wait_until(lambda: arrived(tmp_path) == 18, WAIT_S, "the held request in the app")
        waiting.request("GET", "/")
        (tmp_path / "release").touch()
        answer(held)
        answer(waiting)
        for conn in idle:
            conn.request("GET", "/")
            answer(conn)
