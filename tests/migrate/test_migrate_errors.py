"""What `robin migrate gluster` says when it cannot go on, and what it leaves behind: the command as a subprocess
against a real glusterd, robin under gunicorn and the real Ceph dev cluster. Each refusal is checked by the exact
first line on stderr and the exit status; the work dir by what is in it afterwards."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.support.net import wait_until

pytestmark = pytest.mark.integration
EXIT_REFUSED = 2
NOTHING_LISTENS_PORT = 24999
EXIT_FAILED = 1


@pytest.fixture()
def small_volume(gluster):
    """A GlusterFS volume with a file and a directory holding another: its name."""
    volume = gluster.create_volume(unique("gv").replace("-", "_"))
    with gluster.mount(volume) as root:
        (Path(root) / "top.txt").write_text("top\n")
        (Path(root) / "sub").mkdir()
        (Path(root) / "sub" / "inner.txt").write_text("inner\n")
    yield volume
    gluster.delete_volume(volume)


def first_line(stderr: str) -> str:
    return stderr.splitlines()[0] if stderr else ""


def left_in(work_dir: Path) -> set[str]:
    """Every path under the work dir, relative to it: the lock files included (a run removes its own)."""
    return {str(path.relative_to(work_dir)) for path in work_dir.rglob("*")}


def statuses(robin_api, project: str, name: str) -> list[str]:
    answer = robin_api("GET", f"/api/v2/projects/{project}/migrations",
                       params={"volume_kind": "cephfs", "volume_name": name})
    assert answer.status_code == 200, answer.text
    return [item["status"] for item in answer.json()["items"]]


def test_a_missing_volume_is_one_line_naming_server_port_volume_answer_and_log(gluster, migrate, new_project):
    project, volume = new_project(), unique("missing").replace("-", "_")

    status, output, stderr = migrate(f"{gluster.host}:/{volume}", "--project", project)

    assert status == EXIT_REFUSED, (output, stderr)
    entry = f"cephfs-{project}-gluster-{volume}"
    log = os.path.realpath(migrate.work_dir / entry / "plan" / "glusterfs-client.log")
    assert first_line(stderr) == (
        f"source_unreachable: cannot mount 127.0.0.1:/{volume}: glusterd at 127.0.0.1:24007 said 'failed to fetch "
        f"volume file (key:{volume})' (no started volume '{volume}' there?); the client's log: {log}")
    assert "failed to fetch volume file" in Path(log).read_text()
    (item,) = output["plan"]
    # Nothing was measured: no size, no counts (not robin's smallest volume for a source of no files).
    assert item["size_bytes"] is None and item["files"] is None and item["logical_bytes"] is None
    # Only the log the line names stays: no mountpoint, no directory of the run that never began.
    assert left_in(migrate.work_dir) == {entry, f"{entry}/plan", f"{entry}/plan/glusterfs-client.log"}


def test_a_port_where_nothing_listens_fails_and_says_so(gluster, small_volume, migrate, new_project):
    """The volume exists on glusterd's own port: a client that fell back to 24007 would mount it."""
    spec = f"{gluster.host}:{NOTHING_LISTENS_PORT}:/{small_volume}"

    status, output, stderr = migrate(spec, "--project", new_project(), "--dry-run")

    assert status == EXIT_REFUSED, (output, stderr)
    assert first_line(stderr).startswith(
        f"source_unreachable: cannot mount {spec}: no glusterd answers at 127.0.0.1:{NOTHING_LISTENS_PORT} "
        f"(connection refused); the client's log: /")
    assert output["plan"][0]["refusal"]["code"] == "source_unreachable"


def test_a_source_that_is_none_is_refused_with_one_line(migrate, new_project):
    status, _, stderr = migrate("gluster-1:/data/../etc", "--project", new_project())

    assert status == EXIT_REFUSED
    assert first_line(stderr) == "invalid_source: 'gluster-1:/data/../etc': the directory may not contain . or .."
    assert not migrate.work_dir.exists() or left_in(migrate.work_dir) == set()


def test_a_volume_count_quota_refusal_names_that_limit_and_leaves_nothing(gluster, small_volume, migrate,
                                                                          new_project, robin_api):
    project = new_project(max_volumes=0)

    status, output, stderr = migrate(f"{gluster.host}:/{small_volume}", "--project", project)

    assert status == EXIT_REFUSED, (output, stderr)
    assert first_line(stderr) == (
        f"quota_exceeded: the quota of project '{project}' refuses: its volume-count limit (max_volumes 0, 0 in use) "
        f"leaves room for 0 more volume(s) and this migration makes 1. Nothing was changed; raise its quota "
        f"(max_volumes: PATCH /api/v2/projects/{project}) or migrate fewer volumes at once")
    (item,) = output["plan"]
    assert item["size_bytes"] == 2**30 and item["files"] == 2  # measured: the size that was asked of the quota
    assert left_in(migrate.work_dir) == set()
    assert statuses(robin_api, project, f"gluster-{small_volume}") == []


def test_any_spelling_resumes_a_source_and_another_source_is_refused(gluster, small_volume, migrate, new_project,
                                                                     robin_api):
    project, name = new_project(), f"gluster-{small_volume}"
    status, output, stderr = migrate(f"{gluster.host}:/{small_volume}", "--project", project)
    assert status == 0, (output, stderr)
    # A finished run leaves no mountpoint, log or directory of its own.
    assert left_in(migrate.work_dir) == set()

    status, output, stderr = migrate(f"{gluster.host}:24007://{small_volume}/", "--project", project)

    assert status == 0, (output, stderr)
    (report,) = output["reports"]
    assert report["source"] == f"127.0.0.1:/{small_volume}" and report["status"] == "verified"
    assert report["copy"]["files_copied"] == 0 and report["copy"]["files_unchanged"] == 2
    assert statuses(robin_api, project, name) == ["started", "verified", "started", "verified"]
    assert left_in(migrate.work_dir) == set()

    status, output, stderr = migrate(f"{gluster.host}:/{small_volume}/sub", "--project", project, "--name", name)

    assert status == EXIT_REFUSED, (output, stderr)
    assert first_line(stderr) == (
        f"destination_exists: cephfs volume '{name}' exists in project '{project}' and holds a migration of "
        f"127.0.0.1:/{small_volume}, not of 127.0.0.1:/{small_volume}/sub: nothing was changed; choose another "
        f"name (--name)")
    assert statuses(robin_api, project, name) == ["started", "verified", "started", "verified"]
    assert left_in(migrate.work_dir) == set()


def test_a_source_failing_mid_copy_is_one_error_naming_the_client_log_which_is_kept(gluster, migrate, new_project):
    volume, project = gluster.create_volume(unique("gv").replace("-", "_")), new_project()
    try:
        with gluster.mount(volume) as root:
            for i in range(400):
                (Path(root) / f"file-{i:03d}").write_bytes(os.urandom(256 * 1024))
        entry = f"cephfs-{project}-gluster-{volume}"
        copying = migrate.work_dir / entry / "run" / "destination"
        process = migrate.start(f"{gluster.host}:/{volume}", "--project", project, "--parallel", "1")
        wait_until(lambda: process.poll() is not None or (copying.is_dir() and len(os.listdir(copying)) >= 3),
                   timeout=120, what="the copy to begin")
        gluster.kill_bricks(volume)
        status, output, stderr = migrate.finish(process)
    finally:
        gluster.restart_bricks(volume)
        gluster.delete_volume(volume)

    assert status == EXIT_FAILED, (output, stderr)
    (report,) = output["reports"]
    log = os.path.realpath(migrate.work_dir / entry / "run" / "glusterfs-client.log")
    assert report["status"] == "failed" and report["error"]["code"] == "source_failed", report
    message = report["error"]["message"]
    assert message.startswith(f"127.0.0.1:/{volume} stopped answering during the migration ("), message
    assert message.endswith(f"; the client's log: {log}"), message
    assert Path(log).stat().st_size > 0
    # The log the error names stays, and only it: no mountpoint, no lock.
    assert left_in(migrate.work_dir) == {entry, f"{entry}/run", f"{entry}/run/glusterfs-client.log"}
