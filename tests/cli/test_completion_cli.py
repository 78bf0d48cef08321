"""`robin completion SHELL` and `robin --version`: no API, no database, no Ceph."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli.test_audit_events_cli import robin


def test_bash_completes_commands_and_choices_with_the_script_it_is_given():
    """The script as bash runs it: it calls `robin` (the venv's console script) to complete the words typed."""
    script = robin("completion", "bash", env={})
    assert script.returncode == 0, script.stderr
    path = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"

    def completed(*words: str) -> list[str]:
        typed = " ".join(words)
        done = subprocess.run(["bash", "-c", f'source /dev/stdin; COMP_WORDS=({typed}); COMP_CWORD={len(words) - 1}; '
                                             '_robin_completion robin; printf "%s\\n" "${COMPREPLY[@]}"'],
                              input=script.stdout, env={**os.environ, "PATH": path}, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert completed("robin", "vol") == ["volume"]
    assert completed("robin", "volume", "re") == ["resize", "restore"]
    assert completed("robin", "volume", "list", "--kind", "") == ["rbd", "cephfs"]
    assert completed("robin", "project", "list", "-o", "y") == ["yaml"]


@pytest.mark.parametrize("shell, marker", [("zsh", "#compdef robin"), ("fish", "complete --no-files --command robin")])
def test_zsh_and_fish_scripts_complete_robin(shell, marker):
    script = robin("completion", shell, env={})
    assert script.returncode == 0 and marker in script.stdout and "_ROBIN_COMPLETE" in script.stdout


def test_an_unknown_shell_is_a_usage_error_and_the_version_is_printed():
    unknown = robin("completion", "tcsh", env={})
    assert unknown.returncode == 2 and "Invalid value for '{bash|zsh|fish}'" in unknown.stderr
    version = robin("--version", env={})
    assert version.returncode == 0 and version.stdout.startswith("robin, version ")
