"""`robin audit events` as a client of a real `robin serve` (the session's gunicorn), run as a subprocess."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.conftest import make_token, unique

DEADLINE = 60  # seconds a followed event may take to be printed, on a loaded machine


def robin(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robin.cli", *args], env=client_env(env), capture_output=True,
                          text=True, timeout=120)


def client_env(env: dict) -> dict:
    """The environment of an admin's machine: robin's API, no database, no Ceph."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ROBIN_")}
    return {**clean, "ROBIN_LOG_LEVEL": "WARNING", **env}


@pytest.fixture()
def token_file(tmp_path):
    def write(token: str) -> str:
        path = tmp_path / unique("token")
        path.write_text(token + "\n")
        return str(path)

    return write


@pytest.fixture()
def project_with_events(robin_url, admin_token):
    """A project with three events from the API: its quota changed, a missing volume deleted twice."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    project = unique("p")
    quota = {"max_bytes": 2**30, "max_volumes": 5, "max_snapshots": 5}
    assert requests.post(f"{robin_url}/api/v2/projects", json={"name": project, "quota": quota}, headers=headers,
                         timeout=30).status_code == 201
    assert requests.patch(f"{robin_url}/api/v2/projects/{project}", json={"quota": quota}, headers=headers,
                          timeout=30).status_code == 200
    for _ in range(2):
        assert requests.delete(f"{robin_url}/api/v2/projects/{project}/rbd-images/{unique('gone')}",
                               headers=headers, timeout=30).status_code == 404
    return project


def test_json_is_the_apis_events_oldest_first(robin_url, admin_token, token_file, project_with_events):
    env = {"ROBIN_URL": robin_url, "ROBIN_TOKEN_FILE": token_file(admin_token)}
    result = robin("audit", "events", "--since", "1h", "--project", project_with_events, "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    api = requests.get(f"{robin_url}/api/v2/audit/events", params={"project": project_with_events}, timeout=30,
                       headers={"Authorization": f"Bearer {admin_token}"}).json()["items"]
    assert printed == api[::-1] and len(printed) == 3
    assert [event["outcome"] for event in printed] == ["success", "failure", "failure"]
    failures = robin("audit", "events", "--project", project_with_events, "--outcome", "failure", "--limit", "1",
                     "-o", "json", env=env)
    assert json.loads(failures.stdout) == printed[-1:]


def test_table_has_a_header_and_a_line_an_event(robin_url, admin_token, project_with_events):
    env = {"ROBIN_URL": robin_url, "ROBIN_TOKEN": admin_token}
    result = robin("audit", "events", "--project", project_with_events, env=env)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["AT", "ACTOR", "ACTION", "TARGET", "PROJECT", "OUTCOME"]
    assert len(lines) == 3 and all(project_with_events in line for line in lines)
    assert lines[0].endswith("success 200") and lines[-1].endswith("failure 404 volume_not_found")
    assert robin("audit", "events", "--project", project_with_events, "--since", "2999-01-01T00:00:00Z",
                 env=env).stdout == ""


def test_a_member_sees_its_project_and_is_refused_another(app, robin_url, project_with_events, new_project,
                                                         token_file):
    mine = new_project()
    flags = ["--url", robin_url, "--token-file", token_file(make_token(app, "member", mine))]
    # --token-file wins over a ROBIN_TOKEN the environment holds.
    own = robin("audit", "events", *flags, "-o", "json", env={"ROBIN_TOKEN": "robin_not-this-one"})
    assert own.returncode == 0, own.stderr
    assert {event["project"] for event in json.loads(own.stdout)} <= {mine}
    refused = robin("audit", "events", *flags, "--project", project_with_events, env={})
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("forbidden: this token may not read project")


@pytest.mark.parametrize("args, said", [
    (["--since", "yesterday"], "Invalid value for '--since'"),
    (["--since", "2026-01-01T00:00:00"], "no time zone"),
    (["--follow", "--until", "1h"], "takes no --until"),
    (["-o", "yaml"], "Invalid value for '-o'"),
])
def test_bad_arguments_exit_2(robin_url, admin_token, args, said):
    result = robin("audit", "events", *args, env={"ROBIN_URL": robin_url, "ROBIN_TOKEN": admin_token})
    assert result.returncode == 2 and said in result.stderr, result.stderr


def test_refusals_of_the_api_and_a_missing_api_exit_1(robin_url, admin_token):
    refused = robin("audit", "events", "--target", "a/b", env={"ROBIN_URL": robin_url, "ROBIN_TOKEN": admin_token})
    assert refused.returncode == 1 and refused.stderr.startswith("validation_error: invalid input: target:")
    unconfigured = robin("audit", "events", env={})
    assert unconfigured.returncode == 1 and "ROBIN_URL" in unconfigured.stderr
    assert "Traceback" not in refused.stderr + unconfigured.stderr


def interruptible() -> None:
    """Ctrl-C's signal at its default in the child, as in a terminal: a shell running the suite in the background
    (a CI job's) hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_follow_prints_each_new_event_once(robin_url, admin_token, project_with_events):
    env = {"ROBIN_URL": robin_url, "ROBIN_TOKEN": admin_token}
    follower = subprocess.Popen(
        [sys.executable, "-m", "robin.cli", "audit", "events", "--project", project_with_events, "--follow",
         "--interval", "0.2", "-o", "json"], env=client_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=interruptible)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True)
    reader.start()
    try:
        first = [json.loads(next_line(lines)) for _ in range(3)]
        assert [event["outcome"] for event in first] == ["success", "failure", "failure"]
        gone = unique("gone")
        assert requests.delete(f"{robin_url}/api/v2/projects/{project_with_events}/rbd-images/{gone}", timeout=30,
                               headers={"Authorization": f"Bearer {admin_token}"}).status_code == 404
        followed = json.loads(next_line(lines))
        assert followed["target"].endswith(gone) and followed["id"] > first[-1]["id"]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0
        reader.join(timeout=30)
        assert lines.empty()  # nothing printed twice, though every poll looked back at the same events
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def next_line(lines: queue.Queue) -> str:
    deadline = time.monotonic() + DEADLINE
    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
    assert line, "the follower stopped printing"
    return line
