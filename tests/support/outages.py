"""A one-worker robin with a short Ceph timeout, for tests that stop a Ceph daemon under it (SIGSTOP,
SIGCONT in a finally) and time its answers."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

import requests

from tests.support.server import running_server

T = TypeVar("T")


@contextmanager
def one_worker_server(database_url: str, ceph_conf: str, admin_token: str, ceph_timeout_s: float):
    """(base URL, an admin's requests session) of a one-worker `robin serve`: all requests share one
    process's Ceph connections. Its maintenance loop is off: the test reconciles."""
    env = {"ROBIN_MAINTENANCE_INTERVAL": "0", "ROBIN_CEPH_TIMEOUT": str(ceph_timeout_s)}
    with running_server(database_url, ceph_conf, workers=1, extra_env=env) as url, requests.Session() as api:
        api.headers["Authorization"] = f"Bearer {admin_token}"
        yield url, api


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """call()'s result and the seconds it took."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


# The dev cluster's one MDS (robin.dev.cluster).
DEV_MDS = "mds.a"


def evict_cephfs_sessions(ceph_conf: str, pids: set[int]) -> list[int]:
    """Evict the MDS sessions of processes that were killed, as an operator does after losing a host: until the
    MDS times such a session out (session_timeout, 60 s), the capabilities it held stall every other client's
    calls on those directories. Returns the evicted session ids."""
    def ceph(*args: str) -> str:
        return subprocess.run(["ceph", "--conf", ceph_conf, "tell", DEV_MDS, *args], capture_output=True, text=True,
                              timeout=60, check=True).stdout

    sessions = json.loads(ceph("client", "ls", "--format", "json"))
    dead = [session["id"] for session in sessions
            if int(session.get("client_metadata", {}).get("pid", -1)) in pids]
    for session_id in dead:
        ceph("client", "evict", f"id={session_id}")
    return dead
