"""What the tests of `robin` as a client of robin's API share: the command run as an admin (or another token) with
no context file of the user's in its way, the API to compare with, and readers of what it prints."""
from __future__ import annotations

import os
import subprocess

import pytest
import requests

from tests.cli.test_audit_events_cli import robin


@pytest.fixture()
def cli(robin_url, admin_token, tmp_path):
    """cli(*args, token=admin) -> the finished subprocess, with no context file of the user's in its way."""

    def run(*args: str, token: str = admin_token, env: dict | None = None):
        return robin(*args, env={"ROBIN_URL": robin_url, "ROBIN_TOKEN": token,
                                 "XDG_CONFIG_HOME": str(tmp_path / "config"), **(env or {})})

    return run


@pytest.fixture()
def api(robin_url, admin_token):
    """api(method, path, **kwargs) -> the decoded answer, as an admin."""

    def call(method: str, path: str, **kwargs):
        response = requests.request(method, robin_url + path, headers={"Authorization": f"Bearer {admin_token}"},
                                    timeout=60, **kwargs)
        return response.json() if response.content else None

    return call


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result, code: str) -> str:
    """The API's refusal: exit status 1, `code: message` on stderr, nothing on stdout."""
    assert (result.returncode, result.stdout) == (1, ""), (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith(f"{code}: "), result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    return result.stderr


def usage_error(result, said: str) -> None:
    assert result.returncode == 2 and said in result.stderr, (result.returncode, result.stderr)
    assert result.stdout == ""


def table(text: str) -> list[dict]:
    """A table printed for people, as rows keyed by its headers (the columns are aligned; cells hold no double
    space, headers no space but between words, which the tests' columns never have)."""
    header, *lines = text.splitlines()
    starts = [index for index, char in enumerate(header) if char != " " and (index == 0 or header[index - 1] == " "
                                                                           and header[index - 2:index] == "  ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[start:end].strip() for start, end in bounds]
    return [{name: line[start:end].strip() for name, (start, end) in zip(names, bounds, strict=True)}
            for line in lines]


def on_terminal(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """`argv` run with its stderr on a pseudo-terminal (as an admin's shell has it), its stdout on a pipe."""
    controller, terminal = os.openpty()
    try:
        done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=terminal, text=True, timeout=300)
        os.close(terminal)
        terminal = None
        done.stderr = _drain(controller)
        return done
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)


def _drain(descriptor: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(descriptor, 65536)
        except OSError:  # EIO: the other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode().replace("\r\n", "\n")
