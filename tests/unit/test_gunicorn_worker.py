"""robin/gunicorn_worker.py under real gunicorn on 127.0.0.1: a worker that tells its arbiter it is alive at most
twice a second is never taken for a hung one, neither while it answers request after request nor while it idles,
with an arbiter timeout of 2 s."""
from __future__ import annotations

import http.client
import time

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
