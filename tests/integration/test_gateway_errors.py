"""The data gateway's refusals no other test reached, through Wayne's /v1 device calls against a real `robin gateway`
and real mounts: a second check while one runs (`verify_running`), and a mount the host cannot make
(`gateway_mount_failed`). Each leaves the account and the volume as they were."""
from __future__ import annotations

import struct

import pytest
import rbd
from sqlalchemy import select

from robin.db import db, utcnow
from robin.gateway.models import GatewayAccount, VerifyState
from tests.integration import test_wayne_devices as devices
from tests.integration.test_wayne_v1 import new_user

pytestmark = pytest.mark.integration
# The fixtures of the device tests: Wayne with a member token of a fresh platform project, a gateway of this module.
point_wayne_at, project, wayne = devices.point_wayne_at, devices.project, devices.wayne
gateway, gateway_dir, device = devices.gateway, devices.gateway_dir, devices.device
activate, status, deactivate = devices.activate, devices.status, devices.deactivate


def account_of(user: str) -> tuple:
    with db.reading() as session:
        account = session.scalar(select(GatewayAccount).where(GatewayAccount.username == user))
        return account.id, account.verify_state, account.verified_at, account.mount_state, account.mount_path


def test_a_second_check_while_one_runs_is_refused(app, wayne, device):
    name, user = device("cephfs"), new_user()
    activate(wayne, "cephfs", name, user)
    # A check under way, as its thread records it when it starts.
    with app.app_context(), db.unit_of_work() as session:
        account = session.scalar(select(GatewayAccount).where(GatewayAccount.username == user))
        account.verify_state, account.verify_message, account.verified_at = VerifyState.VERIFYING, None, utcnow()
    before = account_of(user)
    reply = wayne.get(f"/v1/device/{name}/verify?type=cephfs")
    assert reply.status == 409 and reply.text.startswith("verify_running: "), reply.text
    assert account_of(user) == before
    assert "Verifying" in status(wayne, "cephfs", name)["status"]


# ext4's superblock (Documentation/filesystems/ext4/super.rst): 1024 bytes at offset 1024; s_log_block_size at 0x18,
# s_magic at 0x38, s_checksum (crc32c of the bytes before it, with metadata_csum) at 0x3FC.
SUPERBLOCK, LOG_BLOCK_SIZE, MAGIC, CHECKSUM = 1024, 0x18, 0x38, 0x3FC


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C = _crc32c_table()


def ext4_checksum(superblock: bytes) -> int:
    """The kernel's ext4_superblock_csum: crc32c seeded with ~0, without the final inversion."""
    crc = 0xFFFFFFFF
    for byte in superblock[:CHECKSUM]:
        crc = CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _break_block_size(ioctx, name: str) -> None:
    """A block size no kernel mounts (2^30 bytes), in a superblock that is otherwise whole (magic and checksum
    right): blkid still sees ext4, so the gateway mounts it, and the mount fails."""
    with rbd.Image(ioctx, name) as image:
        superblock = bytearray(image.read(SUPERBLOCK, 1024))
        assert struct.unpack_from("<H", superblock, MAGIC)[0] == 0xEF53
        assert struct.unpack_from("<I", superblock, CHECKSUM)[0] == ext4_checksum(superblock)
        struct.pack_into("<I", superblock, LOG_BLOCK_SIZE, 20)
        struct.pack_into("<I", superblock, CHECKSUM, ext4_checksum(superblock))
        image.write(bytes(superblock), SUPERBLOCK)


def test_a_mount_the_gateway_cannot_make_is_a_500_with_its_code(wayne, device, gateway_dir, rbd_ioctx):
    name, user = device("rbd"), new_user()
    activate(wayne, "rbd", name, user)  # formats the blank image
    deactivate(wayne, "rbd", name)
    _break_block_size(rbd_ioctx, name)
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        written = image.read(0, 1 << 20)
    reply = wayne.put(f"/v1/device/{name}?type=rbd", {"user": user, "password": devices.wayne_password(user)})
    assert reply.status == 500 and reply.text.startswith("gateway_mount_failed: "), reply.text
    assert name in reply.text
    assert not devices.mounts_under(gateway_dir)
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.read(0, 1 << 20) == written  # not formatted again, nothing written
