"""A rerun of `robin migrate gluster` never writes beside a workload: not after the cut-over (the destination is the
pod's then), not into a destination someone else has open, and not while another run migrates the same volume. The
command runs as a subprocess against a real GlusterFS volume, robin under gunicorn and the real Ceph dev cluster;
what the victim holds is checked through mounts of the volume and in Ceph."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import rbd

from robin import mounts
from tests.conftest import unique
from tests.support import trees
from tests.support.mounts import ceph_fuse, rbd_filesystem, read, write

pytestmark = pytest.mark.integration
DEADLINE_S = 120


@pytest.fixture()
def source(gluster):
    """A GlusterFS volume holding the realistic tree: its spec."""
    volume = gluster.create_volume(unique("gv").replace("-", "_"))
    with gluster.mount(volume) as root:
        trees.build(Path(root))
    yield f"{gluster.host}:/{volume}"
    gluster.delete_volume(volume)


def statuses(robin_api, project: str, name: str, kind: str) -> list[str]:
    answer = robin_api("GET", f"/api/v2/projects/{project}/migrations",
                       params={"volume_kind": kind, "volume_name": name})
    assert answer.status_code == 200, answer.text
    return [item["status"] for item in answer.json()["items"]]


def refusal(output: dict) -> dict:
    (item,) = output["plan"]
    assert not item["ok"] and "reports" not in output, output
    return item["refusal"]


def migrated(migrate, spec: str, *args: str) -> None:
    status, output, stderr = migrate(spec, *args)
    assert status == 0, (output, stderr)


def test_rerun_after_cutover_is_refused_and_deletes_nothing(source, migrate, new_project, robin_api, ceph_conf):
    project, name = new_project(), unique("mig")
    migrated(migrate, source, "--project", project, "--name", name)
    # What the cut-over records once the claim is bound to the volume: from now on the workload writes there.
    answer = robin_api("POST", f"/api/v2/projects/{project}/migrations", json={
        "source": source, "volume_kind": "cephfs", "volume_name": name, "status": "cut-over", "report": {}})
    assert answer.status_code == 201, answer.text
    path = robin_api("GET", f"/api/v2/projects/{project}/cephfs-paths/{name}").json()["path"]
    with ceph_fuse(ceph_conf, path) as mounted:
        write(os.path.join(mounted, "written-by-the-pod.txt"), "after the cut-over\n")

    status, output, stderr = migrate(source, "--project", project, "--name", name)

    assert status == 2, (output, stderr)
    assert refusal(output)["code"] == "already_cut_over"
    assert not mounts.mounts_under(str(migrate.work_dir))
    with ceph_fuse(ceph_conf, path) as mounted:
        assert read(os.path.join(mounted, "written-by-the-pod.txt")) == "after the cut-over\n"
    assert statuses(robin_api, project, name, "cephfs") == ["started", "verified", "cut-over"]


def test_destination_in_use_is_refused(source, migrate, new_project, robin_api, rbd_ioctx, ceph_conf):
    project, name = new_project(), unique("mig")
    migrated(migrate, source, "--project", project, "--to", "rbd", "--name", name)
    # Another host has the image mapped and its file system mounted (rbd-fuse: a watcher of the image).
    with rbd_filesystem(ceph_conf, "rbd", name, mkfs=False) as mounted:
        write(os.path.join(mounted, "written-elsewhere.txt"), "the other writer\n")
        with rbd.Image(rbd_ioctx, name, read_only=True) as image:
            assert image.watchers_list()

        status, output, stderr = migrate(source, "--project", project, "--to", "rbd", "--name", name)

        assert status == 2, (output, stderr)
        refused = refusal(output)
        assert refused["code"] == "destination_in_use" and "watcher" in refused["message"]
        assert not mounts.mounts_under(str(migrate.work_dir))
    with rbd_filesystem(ceph_conf, "rbd", name, mkfs=False) as mounted:
        assert read(os.path.join(mounted, "written-elsewhere.txt")) == "the other writer\n"
    assert statuses(robin_api, project, name, "rbd") == ["started", "verified"]


def wait_for_destination_mount(work_dir: Path, name: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not any(m.mountpoint.endswith(f"{name}/run/destination") for m in mounts.mounts_under(str(work_dir))):
        assert time.monotonic() < deadline, "the first run never mounted its destination"
        time.sleep(0.2)


def test_two_concurrent_runs_on_one_destination_refuse_one(source, migrate, new_project, robin_api):
    project, name = new_project(), unique("mig")
    first = migrate.start(source, "--project", project, "--name", name)
    wait_for_destination_mount(migrate.work_dir, name)
    os.kill(first.pid, signal.SIGSTOP)  # the first run stays in the middle of its copy while the second starts
    try:
        mounted_by_first = sorted(m.mountpoint for m in mounts.mounts_under(str(migrate.work_dir)))
        status, output, stderr = migrate(source, "--project", project, "--name", name)
        assert status == 2, (output, stderr)
        assert refusal(output)["code"] == "migration_running"
        assert sorted(m.mountpoint for m in mounts.mounts_under(str(migrate.work_dir))) == mounted_by_first
    finally:
        os.kill(first.pid, signal.SIGCONT)
    status, output, stderr = migrate.finish(first)
    assert status == 0, (output, stderr)
    assert output["reports"][0]["status"] == "verified" and output["reports"][0]["mismatches"] == 0
    assert statuses(robin_api, project, name, "cephfs") == ["started", "verified"]


def test_two_concurrent_runs_from_two_hosts_on_one_destination_refuse_one(source, migrate, new_project, robin_api):
    """Another host shares no work dir, so no lock file: robin's record of the first run refuses the second."""
    project, name = new_project(), unique("mig")
    other_host = migrate.work_dir / "other-host"  # inside the fixture's work dir, which it cleans up
    first = migrate.start(source, "--project", project, "--name", name, "--work-dir", str(other_host))
    wait_for_destination_mount(other_host, name)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        mounted_by_first = sorted(m.mountpoint for m in mounts.mounts_under(str(migrate.work_dir)))
        status, output, stderr = migrate(source, "--project", project, "--name", name)
        assert status == 2, (output, stderr)
        (report,) = output["reports"]
        assert (report["status"], report["error"]["code"]) == ("refused", "migration_running"), report
        assert sorted(m.mountpoint for m in mounts.mounts_under(str(migrate.work_dir))) == mounted_by_first
        assert statuses(robin_api, project, name, "cephfs") == ["started"]
    finally:
        os.kill(first.pid, signal.SIGCONT)
    status, output, stderr = migrate.finish(first)
    assert status == 0, (output, stderr)
    assert output["reports"][0]["status"] == "verified" and output["reports"][0]["mismatches"] == 0
    assert statuses(robin_api, project, name, "cephfs") == ["started", "verified"]
