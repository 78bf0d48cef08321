"""Which client mounts a CephFS volume and with which arguments. This machine's kernel has no ceph file system, so
the kernel client's mount itself cannot run here: its decision and the exact mount(8) command line are checked,
the command is recorded instead of run; the node tests (tests/csi/test_node.py) mount with ceph-fuse for real. Also
what a stage records for its recovery after its FUSE daemon died, and which errors mean that daemon is gone."""
from __future__ import annotations

import errno
import logging
import os

import pytest

from robin.mounts import MountError, Stager, Volume, cephfs, recovery, system
from robin.mounts.staging import Capability
from robin.mounts.volume import VolumeDir

FSID = "6a1f0c5e-1111-4222-8333-444455556666"
KEY = "AQBzb2xpZGtleWZvcnRlc3RzMTIzNDU2Nzg5MA=="


def volume(**context) -> Volume:
    base = {"type": "cephfs", "monitors": "10.0.0.1:6789,10.0.0.2:6789", "clusterID": FSID, "fsName": "cephfs",
            "path": "/robin/team/v1"}
    return Volume.from_context("cephfs:team:v1", {**base, **context}, {"userID": "robin-node", "userKey": KEY})


def test_kernel_has_ceph_reads_the_file_systems_the_kernel_lists(tmp_path):
    listed = tmp_path / "filesystems"
    listed.write_text("nodev\tsysfs\nnodev\tproc\n\text4\nnodev\tfuse\n")
    assert not cephfs.kernel_has_ceph(str(listed), str(tmp_path / "no-modules"))
    listed.write_text("nodev\tsysfs\n\text4\nnodev\tceph\n")
    assert cephfs.kernel_has_ceph(str(listed), str(tmp_path / "no-modules"))


def test_kernel_has_ceph_counts_a_module_mount_loads(tmp_path):
    listed = tmp_path / "filesystems"
    listed.write_text("\text4\n")
    module_dir = tmp_path / "modules" / os.uname().release / "kernel" / "fs" / "ceph"
    module_dir.mkdir(parents=True)
    assert not cephfs.kernel_has_ceph(str(listed), str(tmp_path / "modules"))
    (module_dir / "ceph.ko.xz").write_bytes(b"")
    assert cephfs.kernel_has_ceph(str(listed), str(tmp_path / "modules"))


@pytest.mark.parametrize(("mounter", "kernel", "chosen", "said"), [
    ("", True, "kernel", "the kernel's CephFS client"),
    ("", False, "fuse", "ceph-fuse, as this node's kernel has no ceph file system"),
    ("kernel", True, "kernel", "as its volume context asks"),
    ("fuse", True, "fuse", "ceph-fuse, as its volume context asks"),
    ("fuse", False, "fuse", "ceph-fuse, as its volume context asks"),
])
def test_the_choice_of_client_is_logged(caplog, mounter, kernel, chosen, said):
    with caplog.at_level(logging.INFO, logger="robin.mounts.cephfs"):
        assert cephfs.choose(volume(mounter=mounter), kernel) == chosen
    assert said in caplog.text and "cephfs:team:v1" in caplog.text


def test_asking_for_the_kernel_client_where_there_is_none_is_refused():
    with pytest.raises(MountError) as refused:
        cephfs.choose(volume(mounter="kernel"), kernel_available=False)
    assert refused.value.kind == "refused" and "mounter fuse" in refused.value.message


@pytest.mark.parametrize(("context", "said"), [
    ({"mounter": "nfs"}, "mounter must be kernel or fuse"),
    ({"kernelMountOptions": "ms_mode=secure,rw -o x"}, "is not a mount option"),
    ({"kernelMountOptions": "secretfile=/etc/shadow"}, "secretfile is set by the node itself"),
    ({"fuseMountOptions": "fsname=someone-else"}, "fsname is set by the node itself"),
    ({"fuseMountOptions": "a,b=c,d"}, None),
])
def test_mount_options_are_checked(context, said):
    if said is None:
        assert volume(**context).fuse_options == ("a", "b=c", "d")
        return
    with pytest.raises(MountError) as invalid:
        volume(**context)
    assert invalid.value.kind == "invalid" and said in invalid.value.message


def test_an_rbd_volume_context_may_name_its_own_mounter():
    """ceph-csi's RBD classes say `mounter: rbd-nbd`: not a CephFS mounter, and not checked as one."""
    rbd = Volume.from_context("rbd:team:v1", {"type": "rbd", "monitors": "10.0.0.1:6789", "pool": "rbd",
                                              "imageName": "v1", "mounter": "rbd-nbd"},
                              {"userID": "robin-node", "userKey": KEY})
    assert rbd.mounter == ""


@pytest.mark.parametrize(("release", "fs_option"), [("5.15.0-91-generic", "mds_namespace=cephfs"),
                                                    ("5.17.1", "fs=cephfs"), ("6.1.0-28-amd64", "fs=cephfs")])
def test_kernel_options_name_the_file_system_as_the_release_reads_it(tmp_path, release, fs_option):
    vdir = VolumeDir(str(tmp_path), "cephfs:team:v1")
    assert cephfs.kernel_options(volume(), vdir, release) == [
        "name=robin-node", f"secretfile={vdir.secret}", fs_option, "mount_timeout=30", f"fsid={FSID}"]


@pytest.mark.parametrize(("monitors", "options", "source", "ms_mode"), [
    ("10.0.0.1:6789,v1:10.0.0.2:6789", "", "10.0.0.1:6789,10.0.0.2:6789", None),
    ("10.0.0.1:3300", "", "10.0.0.1:3300", "ms_mode=prefer-crc"),
    ("v2:10.0.0.1:3301,v2:[fd00::1]:3300", "", "10.0.0.1:3301,[fd00::1]:3300", "ms_mode=prefer-crc"),
    ("10.0.0.1:3300", "ms_mode=secure", "10.0.0.1:3300", "ms_mode=secure"),
])
def test_msgr2_monitors_get_a_messenger_mode(tmp_path, monitors, options, source, ms_mode):
    vol = volume(monitors=monitors, kernelMountOptions=options)
    assert cephfs.kernel_source(vol) == source + ":/robin/team/v1"
    said = [o for o in cephfs.kernel_options(vol, VolumeDir(str(tmp_path), vol.id), "6.1.0") if o.startswith("ms_mode")]
    assert said == ([ms_mode] if ms_mode else [])


def test_the_kernel_mount_command_line(tmp_path, monkeypatch):
    """The stage's exact mount(8) call where the kernel has ceph: the key in a 0600 file, never on the command
    line; the volume's own options, then the capability's flags, then nodev,nosuid last so nothing overrides them."""
    calls = []
    monkeypatch.setattr(cephfs, "kernel_has_ceph", lambda: True)
    monkeypatch.setattr(system, "run", lambda *argv, **kwargs: calls.append(argv))
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "node", "6.1.0-28-amd64", "#1", "x86_64")))
    stager = Stager(str(tmp_path / "state"), "rbd-fuse")
    vol = volume(kernelMountOptions="ms_mode=secure,noatime")
    staging = str(tmp_path / "staging")
    stager.stage(vol, staging, Capability(flags=("noexec",), readonly=True))

    vdir = VolumeDir(stager.state_dir, vol.id)
    assert calls == [("mount", "-t", "ceph", "-o",
                      f"name=robin-node,secretfile={vdir.secret},fs=cephfs,mount_timeout=30,fsid={FSID},"
                      "ms_mode=secure,noatime,noexec,nodev,nosuid,ro",
                      "10.0.0.1:6789,10.0.0.2:6789:/robin/team/v1", staging)]
    assert KEY not in " ".join(calls[0])
    with open(vdir.secret) as secret:
        assert secret.read().strip() == KEY
    assert os.stat(vdir.secret).st_mode & 0o777 == 0o600
    assert vdir.kernel_mount() == "10.0.0.1:6789,10.0.0.2:6789:/robin/team/v1"


def test_a_stage_records_how_it_was_made_without_its_key(tmp_path, monkeypatch):
    """What a stage whose FUSE daemon died is mounted again from: everything the stage was given but the key,
    which only the 0600 keyring holds; read back, the record is the volume and capability staged."""
    monkeypatch.setattr(cephfs, "kernel_has_ceph", lambda: True)
    monkeypatch.setattr(system, "run", lambda *argv, **kwargs: None)
    stager = Stager(str(tmp_path / "state"), "rbd-fuse")
    vol = volume(mounter="fuse", fuseMountOptions="noatime")
    monkeypatch.setattr(stager, "_mount_cephfs_fuse", lambda *args: None)  # the mount itself: tests/csi
    capability = Capability(flags=("noexec",), readonly=True)
    stager.stage(vol, str(tmp_path / "staging"), capability)

    vdir = VolumeDir(stager.state_dir, vol.id)
    with open(vdir.stage_record) as record:
        assert KEY not in record.read()
    assert os.stat(vdir.stage_record).st_mode & 0o777 == 0o600
    assert recovery.recorded_volume_id(vdir.path) == vol.id
    assert recovery.StageRecord.read(vdir) == recovery.StageRecord(str(tmp_path / "staging"), vol, capability)


def test_only_a_lost_connection_is_a_dead_fuse_daemon(tmp_path, monkeypatch):
    def stat_failing(number):
        def fail(path):
            raise OSError(number, os.strerror(number), path)
        return fail

    for number, gone in ((errno.ENOTCONN, True), (errno.ECONNABORTED, True), (errno.EIO, False),
                         (errno.EACCES, False), (errno.ENOENT, False)):
        monkeypatch.setattr(os, "stat", stat_failing(number))
        assert recovery.daemon_gone(str(tmp_path)) is gone, errno.errorcode[number]
    monkeypatch.undo()
    assert recovery.daemon_gone(str(tmp_path)) is False
