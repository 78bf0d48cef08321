"""`robin migrate gluster` end to end, as an admin runs it: the command as a subprocess against a real GlusterFS
volume (a private glusterd, a one-brick volume, its FUSE client), robin's API under gunicorn on the session's
database, and the real Ceph dev cluster. Every byte and attribute is compared through mounts of both sides; the
volume is checked in Ceph and in robin's database."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import rbd
from sqlalchemy import select

from robin.audit.models import AuditEvent
from robin.volumes.models import CephfsPath, RbdImage
from tests.conftest import unique
from tests.support import trees
from tests.support.mounts import ceph_fuse, rbd_filesystem

pytestmark = pytest.mark.integration
GiB = 2**30
RUN_TIMEOUT_S = 300


@pytest.fixture()
def source(gluster):
    """A GlusterFS volume holding the realistic tree; (spec, volume name, what the tree was built with)."""
    volume = gluster.create_volume(unique("gv").replace("-", "_"))
    with gluster.mount(volume) as root:
        built = trees.build(Path(root))
    yield f"{gluster.host}:/{volume}", volume, built
    gluster.delete_volume(volume)


def gluster_snapshot(gluster, volume: str) -> dict:
    with gluster.mount(volume, readonly=True) as root:
        return trees.snapshot(Path(root))


def records(robin_api, project: str, name: str, kind: str = "cephfs") -> list[str]:
    answer = robin_api("GET", f"/api/v2/projects/{project}/migrations",
                       params={"volume_kind": kind, "volume_name": name})
    assert answer.status_code == 200, answer.text
    return [item["status"] for item in answer.json()["items"]]


def only_report(output: dict) -> dict:
    assert len(output["reports"]) == 1, output
    return output["reports"][0]


def test_into_cephfs_every_byte_and_attribute(gluster, source, migrate, new_project, robin_api, fs, db_rows,
                                              ceph_conf):
    spec, volume, _ = source
    project = new_project()
    status, output, stderr = migrate(spec, "--project", project, "--report", "/dev/null")
    assert status == 0, (output, stderr)
    report = only_report(output)
    name = f"gluster-{volume}"
    assert report["status"] == "verified" and report["mismatches"] == 0
    assert report["destination"]["handle"] == f"cephfs:{project}:{name}"
    copied = report["copy"]
    assert copied["files_copied"] == report["files"] > 60 and copied["hardlinks"] == 2 and copied["symlinks"] == 4
    assert copied["specials"] == 1 and not copied["errors"]
    # The sparse file's 256 MiB were read as holes: only its two 1 MiB islands (and the small files) written.
    assert copied["bytes_copied"] > trees.SPARSE_SIZE > 10 * 2**20 > copied["bytes_written"]
    assert report["throughput_bytes_per_s"] > 0 and report["duration_s"] > 0

    size = report["destination"]["size_bytes"]
    assert size == GiB  # 256 MiB of logical bytes, +20%, whole GiB
    (row,) = db_rows(select(CephfsPath).where(CephfsPath.name == name))
    assert (row.state.value, row.size_bytes) == ("available", size)
    path = row.path
    assert int(fs.getxattr(path, "ceph.quota.max_bytes")) == size
    assert records(robin_api, project, name) == ["started", "verified"]
    audited = db_rows(select(AuditEvent).where(AuditEvent.target == f"/api/v2/projects/{project}/migrations")
                      .order_by(AuditEvent.id))
    assert [(event.outcome, event.details["request"]["status"]) for event in audited] == \
        [("success", "started"), ("success", "verified")]

    with ceph_fuse(ceph_conf, path) as mounted:
        assert trees.snapshot(Path(mounted)) == gluster_snapshot(gluster, volume)
        linked = {os.lstat(os.path.join(mounted, rel)).st_ino for rel in trees.HARDLINKS}
        assert len(linked) == 1


def test_into_rbd_with_a_file_system(gluster, source, migrate, new_project, rbd_ioctx, db_rows, ceph_conf):
    spec, volume, _ = source
    project = new_project()
    name = unique("mig")
    status, output, stderr = migrate(spec, "--project", project, "--to", "rbd", "--name", name)
    assert status == 0, (output, stderr)
    report = only_report(output)
    assert report["status"] == "verified" and report["mismatches"] == 0
    size = report["destination"]["size_bytes"]
    assert size == GiB  # ~3 MiB allocated: the sparse file costs an RBD image no more than its data
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == size
    (row,) = db_rows(select(RbdImage).where(RbdImage.name == name))
    assert (row.state.value, row.size_bytes) == ("available", size)

    with rbd_filesystem(ceph_conf, "rbd", name, mkfs=False) as mounted:
        copied = trees.snapshot(Path(mounted))
        assert copied.pop("lost+found")[0] & 0o170000 == 0o040000  # ext4's own, left alone
        assert copied == gluster_snapshot(gluster, volume)
        assert os.lstat(os.path.join(mounted, "sparse.img")).st_blocks * 512 < 8 * 2**20


def test_dry_run_prints_the_plan_and_creates_nothing(source, migrate, new_project, robin_api):
    spec, volume, _ = source
    project = new_project()
    status, output, stderr = migrate(spec, "--project", project, "--dry-run")
    assert status == 0, stderr
    (item,) = output["plan"]
    assert item["ok"] and not item["resume"] and item["kind"] == "cephfs" and item["size_bytes"] == GiB
    assert item["files"] > 60 and item["hardlinks"] == 2 and item["logical_bytes"] > trees.SPARSE_SIZE
    assert item["allocated_bytes"] < 16 * 2**20
    assert "reports" not in output
    assert robin_api("GET", f"/api/v2/projects/{project}/cephfs-paths/gluster-{volume}").status_code == 404
    assert records(robin_api, project, f"gluster-{volume}") == []


def test_quota_refusal_before_anything_is_created(source, migrate, new_project, robin_api):
    spec, volume, _ = source
    project = new_project(max_bytes=512 * 2**20)
    status, output, stderr = migrate(spec, "--project", project)
    assert status == 2, (output, stderr)
    (item,) = output["plan"]
    assert item["refusal"]["code"] == "quota_exceeded" and "raise its quota" in item["refusal"]["message"]
    assert "reports" not in output
    usage = robin_api("GET", f"/api/v2/projects/{project}/usage").json()
    assert usage["volumes"] == 0 and usage["provisioned_bytes"] == 0
    assert records(robin_api, project, f"gluster-{volume}") == []


def test_a_volume_nobody_migrated_is_never_overwritten(source, migrate, new_project, robin_api):
    spec, volume, _ = source
    project = new_project()
    made = robin_api("POST", f"/api/v2/projects/{project}/cephfs-paths",
                     json={"name": f"gluster-{volume}", "quota_bytes": GiB})
    assert made.status_code == 201, made.text
    status, output, _ = migrate(spec, "--project", project)
    assert status == 2
    assert output["plan"][0]["refusal"]["code"] == "destination_exists"


def test_unreachable_volume_is_refused(migrate, new_project, gluster):
    status, output, stderr = migrate(f"{gluster.host}:/{unique('missing').replace('-', '_')}",
                                     "--project", new_project())
    assert status == 2, (output, stderr)
    assert output["plan"][0]["refusal"]["code"] == "source_unreachable"


def test_a_directory_that_is_a_symlink_out_of_the_volume_is_refused(gluster, source, migrate, new_project):
    spec, volume, _ = source
    with gluster.mount(volume) as root:
        os.symlink("/etc", Path(root) / "escape")
    status, output, stderr = migrate(f"{spec}/escape", "--project", new_project())
    assert status == 2, (output, stderr)
    assert output["plan"][0]["refusal"]["code"] == "invalid_source"


def test_killed_half_way_then_resumed_then_source_changes_are_picked_up(gluster, source, migrate, new_project,
                                                                         robin_api, ceph_conf):
    spec, volume, _ = source
    with gluster.mount(volume) as root:
        extra = Path(root) / "many"
        extra.mkdir()
        for i in range(200):
            (extra / f"f{i:04d}").write_bytes(os.urandom(2000 + i))
    project = new_project()
    name = f"gluster-{volume}"

    status, _, _ = migrate(spec, "--project", project, env={"ROBIN_FAULT_POINTS": "migrate.file_copied@60"})
    assert status == -9  # SIGKILL half-way: no cleanup at all
    assert records(robin_api, project, name) == ["started"]
    source_tree = gluster_snapshot(gluster, volume)
    # Read through the killed run's own mount, which its ceph-fuse still serves (as the rerun will use it): that
    # client holds the caps of what it was writing, and a second client would wait ~5 s per file for each.
    landed = trees.snapshot(migrate.work_dir / f"cephfs-{project}-{name}" / "run" / "destination")
    # What a rerun takes as done (a file with the source's size and mtime) is complete: the mtime is set last.
    finished = {rel: entry for rel, entry in landed.items() if entry[4] is not None
                and (entry[3], entry[4]) == source_tree[rel][3:5]}
    assert 50 <= len(finished) < len(source_tree) - 100
    for rel, entry in finished.items():
        assert entry[5] == source_tree[rel][5], rel

    status, output, stderr = migrate(spec, "--project", project)
    assert status == 0, (output, stderr)
    path = robin_api("GET", f"/api/v2/projects/{project}/cephfs-paths/{name}").json()["path"]
    copied = only_report(output)["copy"]
    # A file the killed run had written but not yet given its mtime is compared by checksum, not copied again.
    assert copied["files_unchanged"] >= 50 and only_report(output)["files"] == \
        copied["files_copied"] + copied["files_unchanged"] + copied["files_same_content"]
    with ceph_fuse(ceph_conf, path) as mounted:
        assert trees.snapshot(Path(mounted)) == source_tree

    with gluster.mount(volume) as root:
        _change_source(Path(root))
    status, output, stderr = migrate(spec, "--project", project)
    assert status == 0, (output, stderr)
    copied = only_report(output)["copy"]
    assert (copied["files_copied"], copied["files_same_content"], copied["removed"]) == (2, 1, 1)
    # Each run's `started` holds the destination; the second took over the killed run's.
    assert records(robin_api, project, name) == ["started", "started", "verified", "started", "verified"]
    with ceph_fuse(ceph_conf, path) as mounted:
        assert trees.snapshot(Path(mounted)) == gluster_snapshot(gluster, volume)

    # New bytes under the old size and mtime: only the verification sees them, and --checksum copies them.
    with gluster.mount(volume) as root:
        sneaky = Path(root) / "many" / "f0005"
        before = sneaky.stat()
        sneaky.write_bytes(os.urandom(before.st_size))
        os.utime(sneaky, ns=(before.st_atime_ns, before.st_mtime_ns))
    status, output, _ = migrate(spec, "--project", project)
    report = only_report(output)
    assert status == 1 and report["status"] == "mismatched" and report["copy"]["files_copied"] == 0
    assert [(m["path"], m["what"]) for m in report["verification"]["mismatches"]] == [("many/f0005", "content")]
    status, output, stderr = migrate(spec, "--project", project, "--checksum")
    assert status == 0, (output, stderr)
    assert only_report(output)["copy"]["files_copied"] == 1
    with ceph_fuse(ceph_conf, path) as mounted:
        assert trees.snapshot(Path(mounted)) == gluster_snapshot(gluster, volume)


def _change_source(root: Path) -> None:
    """Same size, new bytes and mtime; one appended to; one deleted; one only touched (same bytes, new mtime)."""
    same_size = root / "many" / "f0001"
    same_size.write_bytes(os.urandom(same_size.stat().st_size))
    os.utime(same_size, ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    with open(root / "many" / "f0002", "ab") as handle:
        handle.write(b"appended")
    (root / "many" / "f0003").unlink()
    os.utime(root / "many" / "f0004", ns=(1_700_000_000_000_000_002, 1_700_000_000_000_000_002))


def test_source_device_node_cannot_reach_the_host_through_the_migration_mount(gluster, tmp_path):
    """A tenant's GlusterFS volume holding a block device node (the host's loop0): the migration's own mount of
    the source is read-only, nodev, nosuid and noexec, so opening the node reads nothing of the host."""
    from robin import mounts
    from robin.migrate.gluster import GlusterSource, mounted

    volume = gluster.create_volume(unique("gv").replace("-", "_"))
    try:
        with gluster.mount(volume) as root:
            os.mknod(Path(root) / "disk", 0o666 | stat.S_IFBLK, os.makedev(7, 0))
        with mounted(GlusterSource.parse(f"{gluster.host}:/{volume}"), str(tmp_path)) as directory:
            assert {"ro", "nodev", "nosuid", "noexec"} <= mounts.mount_at(directory).options
            assert stat.S_ISBLK(os.lstat(Path(directory) / "disk").st_mode)
            with pytest.raises(PermissionError):
                open(Path(directory) / "disk", "rb").close()
        assert not mounts.mounts_under(str(tmp_path))
    finally:
        gluster.delete_volume(volume)
