"""robin/gunicorn_worker.py and robin/gunicorn_conf.py under real gunicorn on 127.0.0.1: a worker that tells its
arbiter it is alive at most twice a second is never taken for a hung one, neither while it answers request after
request nor while it idles, with an arbiter timeout of 2 s; and robin's app in a worker runs with the interpreter
switch interval its settings give."""
from __future__ import annotations

import http.client
import time

from robin.db import upgrade
from tests.support.gunicorn import booted, running

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
