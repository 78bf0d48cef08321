"""robin/gunicorn_worker.py under real gunicorn on 127.0.0.1: a worker that tells its arbiter it is alive at most
twice a second is never taken for a hung one, neither while it answers request after request nor while it idles,
with an arbiter timeout of 2 s."""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests.support.net import free_port, wait_until

REPOSITORY = Path(__file__).resolve().parents[2]
ARBITER_TIMEOUT_S = 2
START_TIMEOUT_S = 120

APP = '''
import os


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@contextmanager
def gunicorn(tmp_path: Path):
    """One worker of robin's class with the app above, stopped (its own session) afterwards; yields the port and
    the log's path."""
    (tmp_path / "pid_app.py").write_text(APP)
    port, log_path = free_port(), tmp_path / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPOSITORY}"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--worker-class", "robin.gunicorn_worker.ThreadWorker",
             "--no-control-socket", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2",
             "--timeout", str(ARBITER_TIMEOUT_S), "--keep-alive", "30", "pid_app:app"],
            env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_until(lambda: "Booting worker" in log_path.read_text() or process.poll() is not None,
                       START_TIMEOUT_S, "gunicorn's worker")
            assert process.poll() is None, log_path.read_text()
            yield port, log_path
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def answering_pid(connection: http.client.HTTPConnection) -> str:
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    return response.read().decode()


def test_a_busy_and_an_idle_worker_both_keep_their_arbiter_content(tmp_path):
    with gunicorn(tmp_path) as (port, log_path):
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
        assert "WORKER TIMEOUT" not in log and log.count("Booting worker") == 1, log
