"""The copy engine and its verification on extended attributes and POSIX ACLs, between two directories of this
host's own file system (ext4 or the like: both hold every xattr namespace and ACLs). What a GlusterFS source and a
CephFS or RBD destination make of them is test_migrate_attributes.py's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robin.migrate import xattrs
from robin.migrate.copy import Copier
from robin.migrate.tree import scan
from robin.migrate.verify import verify
from tests.support import trees


def copy_and_verify(source: Path, destination: Path) -> tuple[dict, dict]:
    tree = scan(str(source))
    copier = Copier(str(source), str(destination), 4)
    stats = copier.copy(tree)
    return stats.as_dict(), verify(tree, str(destination), copier.sources, copier.refused(), 4).as_dict()


@pytest.fixture()
def sides(tmp_path: Path) -> tuple[Path, Path]:
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.mkdir()
    destination.mkdir()
    trees.build_with_attributes(source)
    return source, destination


def test_attributes_and_acls_arrive_exactly(sides):
    source, destination = sides
    copied, verified = copy_and_verify(*sides)
    assert verified["ok"] and not copied["errors"] and not copied["xattrs_refused"], (copied, verified)
    assert trees.attributes(destination) == trees.attributes(source)
    # The mask, not the owning group's own bits, is st_mode's group: a copy that dropped the ACL would widen it.
    assert os.stat(destination / "acl-file").st_mode & 0o777 == 0o644
    tree = scan(str(source))
    assert (tree.totals.acl_entries, tree.totals.xattr_entries) == (4, 2)


def test_a_rerun_mirrors_attribute_changes_that_move_no_mtime(sides):
    source, destination = sides
    copy_and_verify(*sides)
    os.setxattr(source / "tagged", "user.color", b"green")
    os.removexattr(source / "tagged", "user.binary")
    subprocess.run(["setfacl", "-b", str(source / "acl-file")], check=True)
    os.setxattr(destination / "plain", "user.stray", b"not the source's")
    copied, verified = copy_and_verify(*sides)
    assert verified["ok"] and (copied["files_unchanged"], copied["files_copied"]) == (4, 0), (copied, verified)
    assert trees.attributes(destination) == trees.attributes(source)


def test_new_entries_in_a_directory_with_a_default_acl_keep_the_sources_acls(sides):
    """On a rerun the destination's directory has its default ACL already: what is made in it inherits one,
    which the source's entry (here: an ACL removed at the source) does not have."""
    source, destination = sides
    copy_and_verify(*sides)
    (source / "acl-dir" / "later").write_bytes(b"made after the first copy")
    subprocess.run(["setfacl", "-b", str(source / "acl-dir" / "later")], check=True)
    (source / "acl-dir" / "later-dir").mkdir()
    subprocess.run(["setfacl", "-b", str(source / "acl-dir" / "later-dir")], check=True)
    copied, verified = copy_and_verify(*sides)
    assert verified["ok"], verified
    assert trees.attributes(destination) == trees.attributes(source)


def test_verification_reports_attribute_and_acl_differences(sides):
    source, destination = sides
    tree = scan(str(source))
    copier = Copier(str(source), str(destination), 4)
    copier.copy(tree)
    os.setxattr(destination / "tagged-dir", "user.project", b"other")
    subprocess.run(["setfacl", "-m", "u:33:rwx", str(destination / "acl-file")], check=True)
    os.setxattr(destination, "user.foreign", b"1")
    report = verify(tree, str(destination), copier.sources, copier.refused(), 4)
    found = {(m.path, m.what): (m.source, m.destination) for m in report.mismatches}
    assert found.pop(("tagged-dir", "xattr")) == ("user.project=shop", "user.project=other")
    assert found.pop(("", "xattr")) == (None, "user.foreign=1")
    ours, theirs = found.pop(("acl-file", "acl"))
    assert "user:33:rw-" in ours and "mask::r--" in ours and "user:33:rwx" in theirs
    assert set(found) <= {("acl-file", "mode")}  # setfacl widened the mask, which is the group's bits


def test_robins_mark_on_the_volume_root_is_neither_copied_over_nor_compared(sides):
    source, destination = sides
    os.setxattr(destination, xattrs.OWNER_XATTR, b"robin's volume id")
    copied, verified = copy_and_verify(*sides)
    assert verified["ok"] and not copied["xattrs_refused"], (copied, verified)
    assert os.getxattr(destination, xattrs.OWNER_XATTR) == b"robin's volume id"


REFUSING_COPY = """
import json, sys
from robin.migrate.copy import Copier
from robin.migrate.tree import scan
from robin.migrate.verify import verify
tree = scan(sys.argv[1])
copier = Copier(sys.argv[1], sys.argv[2], 4)
stats = copier.copy(tree)
print(json.dumps({"copy": stats.as_dict(),
                  "verification": verify(tree, sys.argv[2], copier.sources, copier.refused()).as_dict()}))
"""


def test_attributes_a_destination_refuses_are_reported_per_file(sides):
    """Without CAP_SYS_ADMIN the kernel refuses to set security.* names (EPERM), as a destination whose security
    module does not allow a label does: each refusal is in the report, the rest of the entry is copied."""
    source, destination = sides
    os.setxattr(source / "tagged", "security.robin-test", b"label")
    os.setxattr(source / "acl-dir", "security.robin-test", b"another")
    done = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", sys.executable, "-c",
                           REFUSING_COPY, str(source), str(destination)], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    refused = {(item["path"], item["name"]): item["error"] for item in report["copy"]["xattrs_refused"]}
    assert set(refused) == {("tagged", "security.robin-test"), ("acl-dir", "security.robin-test")}, report
    assert all("errno 1" in error for error in refused.values())
    assert not report["copy"]["errors"] and report["verification"]["ok"], report
    assert os.getxattr(destination / "tagged", "user.color") == b"blue"
    assert "security.robin-test" not in os.listxattr(destination / "tagged")
    landed = trees.attributes(destination)
    assert landed["acl-file"] == trees.attributes(source)["acl-file"]


def test_a_symlink_carries_no_attributes_of_what_it_points_at(sides, tmp_path):
    """A tenant's absolute symlink names a file of the host that runs the copy: its attributes are neither read
    into the destination nor changed through the link, at either side."""
    source, destination = sides
    host_file = tmp_path / "host-file"
    host_file.write_bytes(b"the host's")
    os.setxattr(host_file, "user.host_secret", b"not the tenant's")
    subprocess.run(["setfacl", "-m", "u:33:r", str(host_file)], check=True)
    before = _attributes_of(host_file)
    os.symlink(host_file, source / "to-the-host")
    assert xattrs.read(str(source / "to-the-host")) == {}  # the link's own, not its target's
    copied, verified = copy_and_verify(*sides)
    assert verified["ok"] and not copied["errors"], (copied, verified)
    assert os.readlink(destination / "to-the-host") == str(host_file)
    # What a copy does to an entry whose attributes it does not know (a new one may have inherited a default
    # ACL): at a link, it removes the link's own ACLs, never its target's.
    assert xattrs.apply(str(destination / "to-the-host"), {}, None) == []
    assert _attributes_of(host_file) == before


def _attributes_of(path: Path) -> dict:
    return {name: os.getxattr(path, name) for name in os.listxattr(path)}
