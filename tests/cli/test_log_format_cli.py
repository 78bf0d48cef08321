"""ROBIN_LOG_FORMAT: human log lines on a terminal, one JSON object a line otherwise or when asked. `robin db upgrade`
logs what it migrated; its stderr is a pseudo-terminal or a pipe."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.cli.conftest import on_terminal

HUMAN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO    robin\.db: database migrated applied=\[.*\] revision=head")


def upgrade_log(tmp_path, log_format: str | None, terminal: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROBIN_")}
    env |= {"ROBIN_DATABASE_URL": f"sqlite:///{tmp_path / 'robin.db'}", "ROBIN_STATE_DIR": str(tmp_path / "state")}
    env |= {"ROBIN_LOG_FORMAT": log_format} if log_format else {}
    argv = [sys.executable, "-m", "robin.cli", "db", "upgrade"]
    if terminal:
        return on_terminal(argv, env)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("log_format, terminal, human", [
    (None, True, True), (None, False, False), ("auto", True, True), ("json", True, False), ("human", False, True)])
def test_the_format_follows_the_terminal_unless_told(tmp_path, log_format, terminal, human):
    done = upgrade_log(tmp_path, log_format, terminal)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    if human:
        assert HUMAN.fullmatch(line), line
    else:
        entry = json.loads(line)
        assert (entry["level"], entry["logger"], entry["message"], entry["revision"]) == \
               ("info", "robin.db", "database migrated", "head")


def test_an_unknown_format_is_refused(tmp_path):
    done = upgrade_log(tmp_path, "xml", terminal=False)
    assert done.returncode == 1 and "ROBIN_LOG_FORMAT must be one of auto, json, human, not 'xml'" in done.stderr
