"""`robin serve` (gunicorn) as a subprocess on 127.0.0.1, stopped by its pid."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.fernet import Fernet

from tests.support.net import free_port, wait_until

# One secret key for the test session's in-process app and every server it starts: a cluster key one of them
# encrypts, the others must decrypt.
SESSION_SECRET_KEY = Fernet.generate_key().decode()

# The checkout this file is in: a server's default working directory, which `python -m` puts first on its path.
CHECKOUT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def running_server(database_url: str, ceph_conf: str, workers: int = 4, extra_env: dict | None = None,
                   cwd: str | None = None):
    """Yield the base URL of a gunicorn-served robin; stop it (and only it) afterwards."""
    with running_replica(database_url, ceph_conf, workers, extra_env, cwd) as replica:
        yield replica.url


@dataclass(frozen=True)
class Replica:
    """A running `robin serve`: its URL, and its gunicorn master, which leads a process group of its own (its
    workers included)."""

    url: str
    process: subprocess.Popen

    def signal_all(self, signum: int) -> None:
        """Send `signum` to the master and every worker at once: SIGKILL is a replica's pod or node lost."""
        os.killpg(self.process.pid, signum)

    def pids(self) -> set[int]:
        """The master and its workers: the processes of its process group."""
        found = set()
        for entry in Path("/proc").iterdir():
            try:
                # Field 5 of stat is the process group; the command name before it may hold spaces.
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) \
                        == self.process.pid:
                    found.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # a process that ended meanwhile
        return found


@contextmanager
def running_replica(database_url: str, ceph_conf: str, workers: int = 4, extra_env: dict | None = None,
                    cwd: str | None = None):
    """Yield a Replica: a gunicorn-served robin with a state directory of its own (as on a host of its own);
    stop it (and only it) afterwards, unless the test killed it. `cwd`: its working directory, which `python -m`
    puts first on its path, ahead of PYTHONPATH: a checkout's directory serves that checkout's robin; by default
    this file's checkout, whatever directory the caller runs in (a benchmark script started from another checkout
    serves its own)."""
    port = free_port()
    state_dir = tempfile.mkdtemp(prefix="robin-serve-")
    env = {**os.environ, "ROBIN_DATABASE_URL": database_url, "ROBIN_CEPH_CONF": ceph_conf,
           "ROBIN_STATE_DIR": state_dir, "ROBIN_SECRET_KEY": SESSION_SECRET_KEY,
           "ROBIN_WORKERS": str(workers), "ROBIN_HOST": "127.0.0.1",
           "ROBIN_PORT": str(port), "ROBIN_LOG_LEVEL": "WARNING", **(extra_env or {})}
    log = open(Path(state_dir) / "server.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "robin.cli", "serve"], env=env, stdout=log, stderr=log,
                               cwd=cwd or CHECKOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url) or process.poll() is not None, START_TIMEOUT_S, "robin serve")
        if process.poll() is not None:
            raise RuntimeError(f"robin serve exited: {(Path(state_dir) / 'server.log').read_text()[-2000:]}")
        yield Replica(url, process)
    finally:
        _stop(process)
        log.close()
        # Left for a failing test's report; the directory is in /tmp and small.
        print(f"robin serve log: {Path(state_dir) / 'server.log'}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # our own session: the master and its workers
            process.wait()
