"""Extended attributes and POSIX ACLs through `robin migrate gluster`: a GlusterFS source (mounted with ACLs) with
user xattrs, access and default ACLs with named users and groups and a mask narrower than the group bits, into
CephFS and into ext4 on RBD; both sides then read through independent mounts with `getfacl` and `getfattr`."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from robin.migrate.xattrs import OWNER_XATTR
from tests.conftest import unique
from tests.support import trees
from tests.support.mounts import ceph_fuse, rbd_filesystem

pytestmark = pytest.mark.integration


@pytest.fixture()
def source(gluster):
    volume = gluster.create_volume(unique("ga").replace("-", "_"))
    with gluster.mount(volume) as root:
        trees.build_with_attributes(Path(root))
    yield f"{gluster.host}:/{volume}", volume
    gluster.delete_volume(volume)


def source_attributes(gluster, volume: str) -> dict[str, tuple[str, str]]:
    with gluster.mount(volume, readonly=True) as root:
        return trees.attributes(Path(root))


def without_robins_mark(found: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The volume root's `user.robin.volume_id` is robin's: asserted there, then left out of the comparison."""
    acls, names = found["."]
    assert f"{OWNER_XATTR}=" in names, names
    kept = "\n".join(line for line in names.splitlines() if not line.startswith(f"{OWNER_XATTR}="))
    return {**found, ".": (acls, kept)}


def test_plan_says_the_source_carries_acls_and_attributes(source, migrate, new_project):
    spec, _ = source
    status, output, stderr = migrate(spec, "--project", new_project(), "--dry-run")
    assert status == 0, stderr
    (item,) = output["plan"]
    assert (item["acl_entries"], item["xattr_entries"]) == (4, 2)


def test_into_cephfs_acls_and_attributes_arrive_exactly(gluster, source, migrate, new_project, robin_api,
                                                        ceph_conf):
    spec, volume = source
    project = new_project()
    status, output, stderr = migrate(spec, "--project", project)
    assert status == 0, (output, stderr)
    (report,) = output["reports"]
    assert report["status"] == "verified" and report["mismatches"] == 0 and not report["copy"]["xattrs_refused"]
    path = robin_api("GET", f"/api/v2/projects/{project}/cephfs-paths/gluster-{volume}").json()["path"]
    expected = source_attributes(gluster, volume)
    with ceph_fuse(ceph_conf, path) as mounted:
        assert without_robins_mark(trees.attributes(Path(mounted))) == expected
        # The group bits are the mask (r--), not the owning group's rw-: they did not widen.
        assert os.stat(Path(mounted) / "acl-file").st_mode & 0o777 == 0o644


def test_into_rbd_acls_and_attributes_arrive_exactly(gluster, source, migrate, new_project, ceph_conf):
    spec, volume = source
    name = unique("mig")
    status, output, stderr = migrate(spec, "--project", new_project(), "--to", "rbd", "--name", name)
    assert status == 0, (output, stderr)
    (report,) = output["reports"]
    assert report["status"] == "verified" and report["mismatches"] == 0 and not report["copy"]["xattrs_refused"]
    expected = source_attributes(gluster, volume)
    with rbd_filesystem(ceph_conf, "rbd", name, mkfs=False) as mounted:
        found = trees.attributes(Path(mounted))
        found.pop("lost+found")
        assert found == expected
