"""robin/gunicorn_worker.py and robin/gunicorn_conf.py under real gunicorn on 127.0.0.1: a worker that tells its
arbiter it is alive at most twice a second is never taken for a hung one, neither while it answers request after
request nor while it idles, with an arbiter timeout of 2 s; and robin's app in a worker runs with the interpreter
switch interval its settings give."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import time

import pytest

from robin.db import upgrade
from tests.support.gunicorn import booted, running
from tests.support.net import wait_until

ARBITER_TIMEOUT_S = 2

APP = '''
import os


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def answering_pid(connection: http.client.HTTPConnection) -> str:
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    return response.read().decode()


def test_a_busy_and_an_idle_worker_both_keep_their_arbiter_content(tmp_path):
    with running(tmp_path, APP, "robin.gunicorn_worker.ThreadWorker", 1, 2, "--timeout", str(ARBITER_TIMEOUT_S),
                 "--keep-alive", "30") as (port, log_path):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            pids = set()
            busy_until = time.monotonic() + 3 * ARBITER_TIMEOUT_S
            while time.monotonic() < busy_until:  # request after request, each turn of the loop a candidate beat
                pids.add(answering_pid(connection))
            time.sleep(3 * ARBITER_TIMEOUT_S)  # idle: only the loop's one-second turns
            pids.add(answering_pid(connection))
        finally:
            connection.close()
        log = log_path.read_text()
        assert len(pids) == 1, log  # one worker answered throughout: it was never replaced
        assert "WORKER TIMEOUT" not in log and booted(log_path) == 1, log


# robin's app as `robin serve` loads it, with one path of the test's own in front (robin's would want a token).
ROBIN_APP = '''
import sys

from robin.wsgi import app

robin_wsgi_app = app.wsgi_app


def switch_interval_first(environ, start_response):
    if environ["PATH_INFO"] != "/switch-interval":
        return robin_wsgi_app(environ, start_response)
    body = repr(sys.getswitchinterval()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app.wsgi_app = switch_interval_first
'''


def test_a_robin_worker_runs_with_the_switch_interval_of_its_settings(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'robin.db'}"
    upgrade(database_url)
    (tmp_path / "metrics").mkdir()
    env = {"ROBIN_DATABASE_URL": database_url, "ROBIN_STATE_DIR": str(tmp_path), "ROBIN_CEPH_CONF": "",
           "ROBIN_MAINTENANCE_INTERVAL": "0", "ROBIN_SWITCH_INTERVAL_MS": "0.5",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with running(tmp_path, ROBIN_APP, "robin.gunicorn_worker.ThreadWorker", 1, 2,
                 "--config", "python:robin.gunicorn_conf", env=env) as (port, log_path):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/switch-interval")
            response = connection.getresponse()
            body = response.read().decode()
        finally:
            connection.close()
    assert response.status == 200, log_path.read_text()
    assert float(body) == 0.0005  # Python's own is 0.005


# The linger (robin/gunicorn_worker.py): a kept-alive connection's next request served on the thread that answered
# the last one. The app names the worker and the thread that answered. LongLinger lingers a minute, longer than any
# of these tests' socket timeouts: a test that passes with it shows that the thing it checks does not wait for a
# linger to end; a stopping LongLinger leaves a file for the test to wait on.
LINGER_APP = '''
import os
import threading
from pathlib import Path

from robin.gunicorn_worker import ThreadWorker


class LongLinger(ThreadWorker):
    linger_s = 60

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        Path(os.environ["STOPPING_FILE"]).write_text("stopping")


def app(environ, start_response):
    body = f"{os.getpid()}:{threading.get_ident()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
ROBIN_WORKER, LONG_LINGER = "robin.gunicorn_worker.ThreadWorker", "gunicorn_test_app.LongLinger"
SOCKET_TIMEOUT_S = 30  # a hang guard, well under LongLinger's linger


def linger_server(tmp_path, worker_class: str, threads: int):
    return running(tmp_path, LINGER_APP, worker_class, 1, threads, "--keep-alive", "30",
                   env={"STOPPING_FILE": str(tmp_path / "stopping")})


def get(connection: http.client.HTTPConnection, headers: dict | None = None) -> http.client.HTTPResponse:
    connection.request("GET", "/", headers=headers or {})
    response = connection.getresponse()
    response.body = response.read().decode()
    return response


@pytest.mark.parametrize("worker_class", [ROBIN_WORKER, LONG_LINGER])
def test_a_kept_alive_connection_has_its_next_requests_answered(tmp_path, worker_class):
    with linger_server(tmp_path, worker_class, 2) as (port, log_path):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT_S)
        try:
            answers = [get(connection) for _ in range(5)]
        finally:
            connection.close()
    assert [answer.status for answer in answers] == [200] * 5, log_path.read_text()
    assert len({answer.body.split(":")[0] for answer in answers}) == 1  # one worker, one connection throughout


@pytest.mark.parametrize("worker_class", [ROBIN_WORKER, LONG_LINGER])
def test_requests_sent_together_on_one_connection_are_all_answered_in_order(tmp_path, worker_class):
    # The second request is read with the first (read ahead): it is answered without waiting for the socket.
    request = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with linger_server(tmp_path, worker_class, 2) as (port, log_path):
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as client:
            client.sendall(request + request + last)
            received = b""
            while chunk := client.recv(65536):  # the server closes after the last
                received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 3, log_path.read_text()


@pytest.mark.parametrize("worker_class", [ROBIN_WORKER, LONG_LINGER])
def test_idle_kept_alive_connections_beyond_the_threads_do_not_keep_another_client_waiting(tmp_path, worker_class):
    threads = 2
    with linger_server(tmp_path, worker_class, threads) as (port, log_path):
        idle = [http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT_S) for _ in range(3 * threads)]
        try:
            first = [get(connection).status for connection in idle]  # each then idles, kept alive
            other = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT_S)
            try:
                others = get(other).status
            finally:
                other.close()
            again = [get(connection).status for connection in reversed(idle)]
        finally:
            for connection in idle:
                connection.close()
    assert first == again == [200] * len(idle) and others == 200, log_path.read_text()


def test_a_stopping_worker_still_answers_a_kept_alive_connection_and_closes_it(tmp_path):
    # One thread, lingering on the connection (a minute) when the worker is told to stop: the request that then
    # arrives is answered, with "Connection: close", and the connection is closed after it.
    with linger_server(tmp_path, LONG_LINGER, 1) as (port, log_path):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT_S)
        try:
            pid = int(get(connection).body.split(":")[0])
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: (tmp_path / "stopping").exists(), SOCKET_TIMEOUT_S, "the worker's stop")
            last = get(connection)
            closed = connection.sock is None or connection.sock.recv(1) == b""
        finally:
            connection.close()
        log = log_path.read_text()
    assert last.status == 200 and last.getheader("Connection") == "close", log
    assert closed, log
