"""RBD image operations. Every mutation is idempotent, as retries and the reconciler need:
creating an equal image succeeds, removing a missing one succeeds, and a different image
under the same name is CephAlreadyExists."""
from __future__ import annotations

from dataclasses import dataclass

import rados
import rbd

from robin.ceph.connection import CephConnection
from robin.ceph.errors import CephAlreadyExists

FEATURE_BITS = {
    "layering": rbd.RBD_FEATURE_LAYERING,
    "exclusive-lock": rbd.RBD_FEATURE_EXCLUSIVE_LOCK,
    "object-map": rbd.RBD_FEATURE_OBJECT_MAP,
    "fast-diff": rbd.RBD_FEATURE_FAST_DIFF,
    "deep-flatten": rbd.RBD_FEATURE_DEEP_FLATTEN,
}
# Which images robin created: an omap in each pool, image name -> volume id (as ceph-csi keeps
# its own directory). It tells robin's own half-finished create (safe to finish) from a foreign
# image that merely has the same name (never taken over). An omap write is one OSD op; marking
# the image itself (image metadata) would cost an image open and an exclusive-lock round, ~10 ms.
DIRECTORY_OBJECT = "robin.rbd_directory"


@dataclass(frozen=True)
class ImageInfo:
    size_bytes: int
    features: tuple[str, ...]


def feature_mask(features) -> int:
    mask = 0
    for name in features:
        mask |= FEATURE_BITS[name]
    return mask


def feature_names(mask: int) -> tuple[str, ...]:
    return tuple(name for name, bit in FEATURE_BITS.items() if mask & bit)


def image_info(conn: CephConnection, pool: str, name: str) -> ImageInfo:
    with conn.operation("rbd.stat", f"reading RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return ImageInfo(size_bytes=image.size(), features=feature_names(image.features()))


def _owner(ioctx: rados.Ioctx, name: str) -> str | None:
    with rados.ReadOpCtx() as op:
        values, _ = ioctx.get_omap_vals_by_keys(op, (name,))
        try:
            ioctx.operate_read_op(op, DIRECTORY_OBJECT)
        except rados.ObjectNotFound:
            return None
        found = dict(values)
    return found[name].decode() if name in found else None


def _set_owner(ioctx: rados.Ioctx, name: str, owner: str | None) -> None:
    with rados.WriteOpCtx() as op:
        if owner is None:
            ioctx.remove_omap_keys(op, (name,))
        else:
            ioctx.set_omap(op, (name,), (owner.encode(),))
        try:
            ioctx.operate_write_op(op, DIRECTORY_OBJECT)
        except rados.ObjectNotFound:
            if owner is not None:
                raise  # removing a key from a directory that does not exist yet: nothing to do


def image_owner(conn: CephConnection, pool: str, name: str) -> str | None:
    """The volume id robin recorded for this image, or None for an image robin did not create."""
    with conn.operation("rbd.owner", f"reading the owner of RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
        return _owner(ioctx, name)


def create_image(conn: CephConnection, pool: str, name: str, size_bytes: int, features, owner: str,
                 metadata: dict[str, str]) -> None:
    what = f"creating RBD image {pool}/{name}"
    with conn.operation("rbd.create", what), conn.ioctx(pool) as ioctx:
        try:
            rbd.RBD().create(ioctx, name, size_bytes, old_format=False, features=feature_mask(features))
        except rbd.ImageExists:
            found = _owner(ioctx, name)
            if found != owner:
                raise CephAlreadyExists(f"RBD image {pool}/{name} already exists in Ceph and is not this volume",
                                        details={"pool": pool, "image": name, "owner": found}) from None
        # Marked after the create: a crash in between leaves an unmarked image, which is reported
        # as drift and never deleted on a guess.
        _set_owner(ioctx, name, owner)
        if metadata:
            with rbd.Image(ioctx, name) as image:
                for key, value in metadata.items():
                    image.metadata_set(key, value)


def resize_image(conn: CephConnection, pool: str, name: str, size_bytes: int) -> None:
    with conn.operation("rbd.resize", f"resizing RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
        with rbd.Image(ioctx, name) as image:
            if image.size() != size_bytes:
                image.resize(size_bytes, allow_shrink=True)


def remove_image(conn: CephConnection, pool: str, name: str) -> None:
    with conn.operation("rbd.remove", f"removing RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
        try:
            rbd.RBD().remove(ioctx, name)
        except rbd.ImageNotFound:
            pass  # already gone: removing is idempotent
        _set_owner(ioctx, name, None)


def used_bytes(conn: CephConnection, pool: str, name: str) -> int:
    """Allocated bytes, from the object map (fast-diff) when the image has a valid one; librbd
    falls back to listing objects otherwise, which is exact but slower."""
    total = 0

    def count(_offset: int, length: int, exists: bool) -> int:
        nonlocal total
        if exists:
            total += length
        return 0

    with conn.operation("rbd.du", f"measuring RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
        with rbd.Image(ioctx, name, read_only=True) as image:
            image.diff_iterate(0, image.size(), None, count, whole_object=True)
    return total


def list_images(conn: CephConnection, pool: str) -> list[str]:
    with conn.operation("rbd.list", f"listing RBD pool {pool}"), conn.ioctx(pool) as ioctx:
        return rbd.RBD().list(ioctx)
