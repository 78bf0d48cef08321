"""Fixtures for the migration tests: a private GlusterFS server (no Ceph needed), and `robin migrate gluster`
run as an admin runs it."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from robin import mounts
from tests.support.gluster import GlusterServer

RUN_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def gluster() -> GlusterServer:
    # A short base dir under /tmp: glusterd's unix socket lives under it and socket paths are limited.
    base_dir = Path(tempfile.mkdtemp(prefix="rg", dir="/tmp"))
    server = GlusterServer(base_dir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture()
def migrate(robin_url, admin_token, ceph_conf, tmp_path):
    """migrate(*args, env=None) -> (exit status, {"plan": ..., "reports": ..., "finalize": ...}, stderr): the
    command as a subprocess with --json, against the session's robin and Ceph, in a work dir of its own. Whatever
    it leaves mounted fails the test, after being cleaned up."""
    work_dir = tmp_path / "work"

    environment = {**os.environ, "ROBIN_URL": robin_url, "ROBIN_TOKEN": admin_token, "ROBIN_CEPH_CONF": ceph_conf}
    started: list[subprocess.Popen] = []

    def command(args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "robin.cli", "migrate", "gluster", "--work-dir", str(work_dir), "--json",
                "--parallel", "4", *args]

    def run(*args: str, env: dict | None = None) -> tuple[int, dict, str]:
        done = subprocess.run(command(args), env={**environment, **(env or {})}, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        return done.returncode, _parsed(done.stdout), done.stderr

    def start(*args: str) -> subprocess.Popen:
        """The command in the background; finish(process) waits for it."""
        process = subprocess.Popen(command(args), env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        started.append(process)
        return process

    def finish(process: subprocess.Popen) -> tuple[int, dict, str]:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        return process.returncode, _parsed(stdout), stderr

    run.work_dir, run.start, run.finish = work_dir, start, finish
    yield run
    for process in started:  # a test that failed half-way: its runs end with it
        if process.poll() is None:
            process.kill()
            process.wait()
    leftovers = [m.mountpoint for m in mounts.mounts_under(str(work_dir))]
    _clean_up(work_dir, leftovers)
    assert not leftovers, f"the command left mounts behind: {leftovers}"


def _parsed(stdout: str) -> dict:
    output = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            output.update(json.loads(line))
    return output


def _clean_up(work_dir: Path, mountpoints: list[str]) -> None:
    """What a killed or failed run left: its mounts (deepest first), then its FUSE daemons, found by pid as the
    processes whose command line names the work directory."""
    for point in sorted(mountpoints, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(work_dir).encode() in command_line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
