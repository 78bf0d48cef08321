"""A one-worker robin with a short Ceph timeout, for tests that stop a Ceph daemon under it (SIGSTOP,
SIGCONT in a finally) and time its answers."""
from __future__ import annotations

import json
import os
import socket
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
    # Threads for every request these tests send at once: each must meet the outage itself, within its own timeout,
    # not queue behind another that waits out its timeout (the default of 4 threads is fewer).
    env = {"ROBIN_MAINTENANCE_INTERVAL": "0", "ROBIN_CEPH_TIMEOUT": str(ceph_timeout_s), "ROBIN_THREADS": "8"}
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
    dead = cephfs_sessions_of(ceph_conf, pids)
    for session_id in dead:
        _tell_mds(ceph_conf, "client", "evict", f"id={session_id}")
    return dead


def evict_dead_cephfs_sessions(ceph_conf: str) -> list[int]:
    """Evict the MDS sessions of this host's processes that are gone (tests kill robin's workers on purpose), so
    that the next tests' CephFS calls do not wait out the MDS session timeout for the capabilities they held."""
    host = socket.gethostname()
    sessions = json.loads(_tell_mds(ceph_conf, "client", "ls", "--format", "json"))
    dead = [session["id"] for session in sessions
            if session.get("client_metadata", {}).get("hostname") == host
            and not _alive(int(session.get("client_metadata", {}).get("pid", 0)))]
    for session_id in dead:
        _tell_mds(ceph_conf, "client", "evict", f"id={session_id}")
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def cephfs_sessions_of(ceph_conf: str, pids: set[int]) -> list[int]:
    """The ids of the MDS sessions whose client process is one of `pids`."""
    sessions = json.loads(_tell_mds(ceph_conf, "client", "ls", "--format", "json"))
    return [session["id"] for session in sessions if int(session.get("client_metadata", {}).get("pid", -1)) in pids]


def _tell_mds(ceph_conf: str, *args: str) -> str:
    return subprocess.run(["ceph", "--conf", ceph_conf, "tell", DEV_MDS, *args], capture_output=True, text=True,
                          timeout=60, check=True).stdout
