"""Decoding an RBD object map as Ceph encodes it (robin.ceph.object_map), on bytes a Ceph 16 OSD stored."""
from __future__ import annotations

from robin.ceph.object_map import crc32c, used_bytes_from_map

MiB = 2**20
# The map of a 64 MiB + 5 byte image (17 objects of 4 MiB) written at byte 0 and at 64 MiB: objects 0 and 16
# exist. Header (bufferlist length 14; version 1, compat 1, length 8; 17 elements), 5 data bytes, footer
# (bufferlist length 12; the header's crc32c, 1 data block, its crc32c).
STORED = bytes.fromhex("0e000000" "01" "01" "08000000" "1100000000000000" "4000000040"
                       "0c000000" "c1cefd27" "01000000" "12772a76")


def test_ceph_s_crc32c_over_a_stored_map():
    assert crc32c(STORED[4:18]) == 0x27FDCEC1 and crc32c(STORED[18:23]) == 0x762A7712


def test_a_stored_map_counts_its_objects_the_last_one_up_to_the_image_s_end():
    assert used_bytes_from_map(STORED, 64 * MiB + 5, 4 * MiB) == 4 * MiB + 5


def test_exists_pending_and_clean_count_as_allocated_and_a_map_without_crcs_is_read():
    # 4 objects, states 1 (exists), 2 (pending), 3 (exists, clean), 0 (none), first in the high bits; no CRCs
    encoded = bytes.fromhex("0e000000" "01" "01" "08000000" "0400000000000000" "6c" "00000000")
    assert used_bytes_from_map(encoded, 16 * MiB, 4 * MiB) == 12 * MiB


def test_what_librbd_would_not_load_is_not_trusted():
    assert used_bytes_from_map(STORED[:17], 64 * MiB + 5, 4 * MiB) is None  # no whole header
    assert used_bytes_from_map(STORED[:-4], 64 * MiB + 5, 4 * MiB) is None  # footer cut short
    assert used_bytes_from_map(STORED[:22] + b"\x41" + STORED[23:], 64 * MiB + 5, 4 * MiB) is None  # data CRC
    assert used_bytes_from_map(STORED[:5] + b"\x02" + STORED[6:], 64 * MiB + 5, 4 * MiB) is None  # compat 2
    assert used_bytes_from_map(STORED, 60 * MiB, 4 * MiB) is None  # 15 objects, not 17
