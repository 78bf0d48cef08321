"""Used bytes of many RBD images at once from their object maps, without opening them.

An image open (header reads, the object map's load, a watch on the header: 5-10 ms on the dev cluster,
BENCHMARKS.md) is what a usage refresh spent its time on, while the figure itself comes from the object map
alone: with fast-diff on and valid, librbd's diff of the whole head image reports every object the map marks
as existing. This module reads the same objects librbd would, straight from the pool: the image ids from the
pool's `rbd_directory`, each header's omap (size, object size, features, flags, snapshots, parent, live
migration) and each head object map `rbd_object_map.<id>`, asynchronously, many images in one Ceph call.

An image the map alone does not answer for as librbd's diff would (no object map or fast-diff, a map marked
invalid, snapshots, a parent, fancy striping, a live migration, a map that is missing, malformed or fails its
CRCs) is left to `rbd_ops.measure_image`, which opens it.
"""
from __future__ import annotations

import errno
import struct
from collections.abc import Iterable
from contextlib import ExitStack

import rados
import rbd

from robin.ceph.connection import CephConnection, progress
from robin.ceph.rbd_ops import FAST_DIFF, MAP_INVALID, Measured

DIRECTORY = "rbd_directory"  # librbd's own: name_<image name> -> image id, for the images of a pool
HEADER_KEYS = ("size", "order", "features", "flags", "parent", "migration")
SNAPSHOT_PREFIX = "snapshot_"  # a header's key per snapshot
# What the map alone cannot measure as the diff would: a clone's diff includes its parent's data, a
# migrating image's is spread over two images, a striped image's objects are not its extents in order.
_WHOLE_MAP = rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
_UNMAPPABLE_FEATURES = rbd.RBD_FEATURE_STRIPINGV2

# Ceph's BitVector<2> as librbd writes it: a bufferlist-wrapped header (u32 length 14; encoding version,
# compat version, u32 length 8; u64 element count), the elements packed four to a byte, the first in the high
# bits, then a bufferlist-wrapped footer (empty without CRCs, else the header's crc32c, a u32 count of data
# blocks and each 4,096-byte data block's crc32c). All little-endian; Ceph's crc32c starts from 0 and is not
# inverted at the end.
_HEADER = struct.Struct("<IBBIQ")
_HEADER_LENGTH = _HEADER.size  # 18
_DATA_BLOCK = 4096
_ELEMENTS_PER_BYTE = 4
_FOOTER_FIXED = 8  # the header's CRC and the count of data blocks


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """Ceph's crc32c with seed 0, as it checks a BitVector (no initial or final inversion)."""
    crc, table = 0, _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


# For each byte of the map, how many of its four objects are not OBJECT_NONEXISTENT (0): OBJECT_EXISTS,
# OBJECT_PENDING and OBJECT_EXISTS_CLEAN all count as allocated, as they do in librbd's diff.
_ALLOCATED_IN_BYTE = bytes(sum(1 for shift in (0, 2, 4, 6) if (byte >> shift) & 3) for byte in range(256))


def used_bytes_from_map(encoded: bytes, size: int, object_size: int) -> int | None:
    """The bytes librbd's whole-object diff of the head image reports, from the map's encoded bytes: every
    allocated object, the last one only up to the image's size. None when the map is not one librbd would
    trust: malformed, of another element count than the image has objects, or failing a CRC."""
    objects = _ceil_div(size, object_size)
    if len(encoded) < _HEADER_LENGTH:
        return None
    wrapped, _version, compat, length, count = _HEADER.unpack_from(encoded)
    if wrapped != _HEADER_LENGTH - 4 or compat > 1 or length != 8 or count != objects:
        return None
    footer_at = _HEADER_LENGTH + _ceil_div(count, _ELEMENTS_PER_BYTE)
    if len(encoded) < footer_at + 4:
        return None
    data = encoded[_HEADER_LENGTH:footer_at]
    (footer_length,) = struct.unpack_from("<I", encoded, footer_at)
    footer = encoded[footer_at + 4:]
    if len(footer) != footer_length or (footer_length and not _crcs_match(encoded[4:_HEADER_LENGTH], data, footer)):
        return None
    return _allocated(data, count) * object_size - _short_tail(data, count, size, object_size)


def _crcs_match(header: bytes, data: bytes, footer: bytes) -> bool:
    blocks = _ceil_div(len(data), _DATA_BLOCK)
    if len(footer) != _FOOTER_FIXED + 4 * blocks:
        return False
    header_crc, count = struct.unpack_from("<II", footer)
    if count != blocks or header_crc != crc32c(header):
        return False
    crcs = struct.unpack_from(f"<{blocks}I", footer, _FOOTER_FIXED)
    return all(crc == crc32c(data[i * _DATA_BLOCK:(i + 1) * _DATA_BLOCK]) for i, crc in enumerate(crcs))


def _state(data: bytes, index: int) -> int:
    return (data[index // _ELEMENTS_PER_BYTE] >> ((3 - index % _ELEMENTS_PER_BYTE) * 2)) & 3


def _allocated(data: bytes, count: int) -> int:
    """Allocated objects among the first `count` (the last byte's unused low bits are not objects)."""
    whole = count // _ELEMENTS_PER_BYTE
    allocated = sum(data[:whole].translate(_ALLOCATED_IN_BYTE))
    return allocated + sum(1 for index in range(whole * _ELEMENTS_PER_BYTE, count) if _state(data, index))


def _short_tail(data: bytes, count: int, size: int, object_size: int) -> int:
    """What the last object lacks of a whole one when the image ends inside it and it is allocated."""
    tail = size % object_size
    return object_size - tail if tail and count and _state(data, count - 1) else 0


def measure_images(conn: CephConnection, pool: str, names: Iterable[str]) -> tuple[dict[str, Measured], list[str]]:
    """Used bytes of the pool's named images from their object maps, in one Ceph call of three rounds of
    reads (the directory, the headers, the maps), the images' reads in flight at once. Returns the figures by
    name and, in the order given, the names to measure with `rbd_ops.measure_image` instead."""
    names = list(names)
    measured = conn.in_pool(pool, "rbd.du_map", f"measuring {len(names)} RBD images of pool {pool} "
                            "from their object maps", lambda ioctx: from_maps(ioctx, names))
    return measured, [name for name in names if name not in measured]


def from_maps(ioctx: rados.Ioctx, names: list[str]) -> dict[str, Measured]:
    """The figures the named images' object maps give, by name (the bare reads, without a CephConnection)."""
    ids = _image_ids(ioctx, names)
    headers = _headers(ioctx, ids)
    shapes = {name: shape for name, header in headers.items() if (shape := _mappable(header)) is not None}
    maps = _object_maps(ioctx, {name: (ids[name], *shape) for name, shape in shapes.items()})
    found = {}
    for name, encoded in maps.items():
        used = used_bytes_from_map(encoded, *shapes[name])
        if used is not None:
            found[name] = Measured(used, FAST_DIFF)
    return found


def _image_ids(ioctx: rados.Ioctx, names: list[str]) -> dict[str, str]:
    """name -> image id for the names the pool's directory has (one omap read)."""
    with rados.ReadOpCtx() as op:
        values, _ = ioctx.get_omap_vals_by_keys(op, tuple(f"name_{name}" for name in names))
        try:
            ioctx.operate_read_op(op, DIRECTORY)
        except rados.ObjectNotFound:
            return {}  # a pool without images
        # An encoded string: u32 length, then the id.
        return {key.removeprefix("name_"): value[4:4 + struct.unpack_from("<I", value)[0]].decode()
                for key, value in values}


def _headers(ioctx: rados.Ioctx, ids: dict[str, str]) -> dict[str, dict[str, bytes]]:
    """name -> the header's HEADER_KEYS present, and "snapshot" if it has one; the reads in flight at once.
    An image whose header is gone meanwhile is left out."""
    with ExitStack() as ops:
        pending = []
        try:
            for name, image_id in ids.items():
                op = ops.enter_context(rados.ReadOpCtx())
                keys, _ = ioctx.get_omap_vals_by_keys(op, HEADER_KEYS)
                snapshots, _ = ioctx.get_omap_vals(op, "", SNAPSHOT_PREFIX, 1)
                pending.append((name, keys, snapshots, ioctx.operate_aio_read_op(op, f"rbd_header.{image_id}")))
        finally:
            _wait(completion for *_, completion in pending)  # librados writes into the ops until they complete
        found = {}
        for name, keys, snapshots, completion in pending:
            if _answered(completion):
                header = dict(keys)
                if any(True for _ in snapshots):
                    header["snapshot"] = b""
                found[name] = header
    return found


def _wait(completions: Iterable[rados.Completion]) -> None:
    for completion in completions:
        completion.wait_for_complete_and_cb()
        progress()  # a deadline counts from the last answer: a large chunk still advancing is alive


def _answered(completion: rados.Completion) -> bool:
    """True when the read got its object, False when the object does not exist; any other error (a timeout,
    a refusal) is raised, as the same read made synchronously would be."""
    returned = completion.get_return_value()
    if returned == -errno.ENOENT:
        return False
    if returned < 0:
        raise rados.OSError("reading an RBD image's metadata", errno=-returned)
    return True


def _u64(value: bytes) -> int:
    return struct.unpack("<Q", value)[0]


def _mappable(header: dict[str, bytes]) -> tuple[int, int] | None:
    """(size, object size) of an image its object map measures as librbd's diff would, else None."""
    if "size" not in header or "order" not in header or "features" not in header:
        return None
    features, flags = _u64(header["features"]), _u64(header["flags"]) if "flags" in header else 0
    if features & _WHOLE_MAP != _WHOLE_MAP or features & _UNMAPPABLE_FEATURES or flags & MAP_INVALID:
        return None
    if {"snapshot", "parent", "migration"} & header.keys():
        return None
    return _u64(header["size"]), 1 << header["order"][0]


def _map_length(size: int, object_size: int) -> int:
    """The encoded map's length with CRCs, for an image of this size."""
    data = _ceil_div(_ceil_div(size, object_size), _ELEMENTS_PER_BYTE)
    return _HEADER_LENGTH + data + 4 + _FOOTER_FIXED + 4 * _ceil_div(data, _DATA_BLOCK)


def _object_maps(ioctx: rados.Ioctx, wanted: dict[str, tuple[str, int, int]]) -> dict[str, bytes]:
    """name -> the encoded head object map, for (image id, size, object size) by name; the reads in flight at
    once. One byte more than expected is asked for, so that a longer object is seen (and not trusted)."""
    read: dict[str, bytes] = {}

    def keep(name: str):
        def done(_completion, data: bytes | None) -> None:  # on a librados thread
            if data is not None:
                read[name] = data
        return done

    pending = []
    try:
        for name, (image_id, size, object_size) in wanted.items():
            length = _map_length(size, object_size) + 1
            pending.append((name, ioctx.aio_read(f"rbd_object_map.{image_id}", length, 0, keep(name))))
    finally:
        _wait(completion for _, completion in pending)
    for _, completion in pending:
        _answered(completion)
    return read
