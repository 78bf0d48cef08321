"""The suite's per-test timeout (setup.cfg, pytest-timeout): a hung test fails alone, and what its fixtures and the
session's fixtures started is still stopped. Checked on a pytest run of its own, with the project's settings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"
RUN_TIMEOUT_S = 120

HANGING = '''
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def service():
    """Stands for the session's Ceph and PostgreSQL: stopped when the run ends."""
    yield
    (HERE / "session-stopped").write_text("yes")


@pytest.fixture
def daemon(service):
    """Stands for what a test starts (a mount, a FUSE daemon): stopped by pid in the fixture's teardown."""
    process = subprocess.Popen(["sleep", "600"])
    (HERE / "daemon-pid").write_text(str(process.pid))
    yield process
    process.kill()
    process.wait()


def test_hangs(daemon):
    time.sleep(600)


def test_after_the_hang(service):
    (HERE / "next-test-ran").write_text("yes")
'''


def test_a_hung_test_fails_alone_and_its_fixtures_and_the_sessions_are_torn_down(tmp_path):
    (tmp_path / "test_hanging.py").write_text(HANGING)
    done = subprocess.run([sys.executable, "-m", "pytest", "-c", str(SETUP_CFG), "--rootdir", str(tmp_path),
                           "-p", "no:cacheprovider", "--timeout", "3", "-q", "test_hanging.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Timeout (>3.0s)" in output and "1 failed, 1 passed" in output, output
    assert (tmp_path / "next-test-ran").exists()  # the run went on after the hang
    assert (tmp_path / "session-stopped").exists()
    pid = int((tmp_path / "daemon-pid").read_text())
    assert not _sleeping(pid), f"the hung test's daemon {pid} still runs"


def _sleeping(pid: int) -> bool:
    """Whether `pid` is still the fixture's `sleep 600` (an orphan, had the run been cut short)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00600\x00"
    except OSError:
        return False
