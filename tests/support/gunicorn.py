"""A real gunicorn on 127.0.0.1 for the worker classes' tests: the WSGI app from source the test gives, started in a
session of its own and stopped by its pid, even when the test fails."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.net import free_port, wait_until

REPOSITORY = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


@contextmanager
def running(directory: Path, app_source: str, worker_class: str, workers: int, threads: int, *options: str,
            env: dict | None = None) -> Iterator[tuple[int, Path]]:
    """gunicorn serving `app_source`'s `app` with `worker_class`, once its workers have booted: (port, log path)."""
    (directory / "gunicorn_test_app.py").write_text(app_source)
    port, log_path = free_port(), directory / "gunicorn.log"
    environment = {**os.environ, **(env or {}), "PYTHONPATH": f"{directory}{os.pathsep}{REPOSITORY}"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--worker-class", worker_class, "--no-control-socket",
             "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads), *options,
             "gunicorn_test_app:app"],
            env=environment, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_until(lambda: booted(log_path) >= workers or process.poll() is not None, START_TIMEOUT_S,
                       "gunicorn's workers")
            assert process.poll() is None, log_path.read_text()
            yield port, log_path
        finally:
            _stop(process)


def booted(log_path: Path) -> int:
    """Workers gunicorn has booted so far, replacements included."""
    return log_path.read_text().count("Booting worker")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the arbiter and its workers
        process.wait()
