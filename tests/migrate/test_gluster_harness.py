"""The GlusterFS harness itself: volumes, FUSE mounts, cleanup, and nothing listening beyond 127.0.0.1."""
from __future__ import annotations

import errno
import os
import uuid

import pytest

from tests.support.gluster import listening_sockets


def _volume_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _mounted(path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def test_a_file_written_through_the_mount_lands_on_the_brick(gluster):
    volume = gluster.create_volume(_volume_name("rw"))
    try:
        with gluster.mount(volume) as mountpoint:
            (mountpoint / "hello.txt").write_bytes(b"hello gluster\n")
            assert (mountpoint / "hello.txt").read_bytes() == b"hello gluster\n"
            client = gluster._mounts[mountpoint]
        assert (gluster.brick_path(volume) / "hello.txt").read_bytes() == b"hello gluster\n"
        assert not _mounted(mountpoint) and not mountpoint.exists()
        assert client.poll() is not None, "the FUSE client outlived its mount"
    finally:
        gluster.delete_volume(volume)
    assert volume not in gluster.cli("volume", "list").split()


def test_a_readonly_mount_reads_but_refuses_writes(gluster):
    volume = gluster.create_volume(_volume_name("ro"))
    try:
        (gluster.brick_path(volume) / "seen.txt").write_bytes(b"from the brick")  # a lone brick: no heal needed
        with gluster.mount(volume, readonly=True) as mountpoint:
            assert (mountpoint / "seen.txt").read_bytes() == b"from the brick"
            with pytest.raises(OSError) as refused:
                (mountpoint / "new.txt").write_bytes(b"x")
            assert refused.value.errno == errno.EROFS
    finally:
        gluster.delete_volume(volume)


def test_glusterd_and_bricks_listen_on_loopback_only(gluster):
    volume = gluster.create_volume(_volume_name("lo"))
    try:
        pids = gluster.pids()
        assert len(pids) == 2, f"expected glusterd and one brick, got {pids}"
        sockets = listening_sockets(pids)
        assert {pid for _, _, pid in sockets} == set(pids), f"each process should listen: {sockets}"
        assert (gluster.host, gluster.port, pids[0]) in sockets
        assert all(address == "127.0.0.1" for address, _, _ in sockets), sockets
    finally:
        gluster.delete_volume(volume)
    assert os.path.isdir(gluster.base_dir)
