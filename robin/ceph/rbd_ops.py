"""RBD image operations. Every mutation is idempotent, as retries and the reconciler need:
creating an equal image succeeds, removing a missing one succeeds, and a different image
under the same name is CephAlreadyExists."""
from __future__ import annotations

from dataclasses import dataclass

import rbd

from robin.ceph.connection import CephConnection
from robin.ceph.errors import CephAlreadyExists, CephNotFound

FEATURE_BITS = {
    "layering": rbd.RBD_FEATURE_LAYERING,
    "exclusive-lock": rbd.RBD_FEATURE_EXCLUSIVE_LOCK,
    "object-map": rbd.RBD_FEATURE_OBJECT_MAP,
    "fast-diff": rbd.RBD_FEATURE_FAST_DIFF,
    "deep-flatten": rbd.RBD_FEATURE_DEEP_FLATTEN,
}
# Ownership marker written into every image robin creates: tells robin's own half-finished
# create (safe to finish) from a foreign image that merely has the same name (never taken over).
OWNER_KEY = "robin.volume_id"


@dataclass(frozen=True)
class ImageInfo:
    size_bytes: int
    features: tuple[str, ...]
    owner: str | None


def feature_mask(features) -> int:
    mask = 0
    for name in features:
        mask |= FEATURE_BITS[name]
    return mask


def feature_names(mask: int) -> tuple[str, ...]:
    return tuple(name for name, bit in FEATURE_BITS.items() if mask & bit)


def _read_info(image: rbd.Image) -> ImageInfo:
    try:
        owner = image.metadata_get(OWNER_KEY)
    except KeyError:
        owner = None
    return ImageInfo(size_bytes=image.size(), features=feature_names(image.features()), owner=owner)


def image_info(conn: CephConnection, pool: str, name: str) -> ImageInfo:
    with conn.operation("rbd.stat", f"reading RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return _read_info(image)


def create_image(conn: CephConnection, pool: str, name: str, size_bytes: int, features, owner: str,
                 metadata: dict[str, str]) -> None:
    what = f"creating RBD image {pool}/{name}"
    with conn.operation("rbd.create", what), conn.ioctx(pool) as ioctx:
        try:
            rbd.RBD().create(ioctx, name, size_bytes, old_format=False, features=feature_mask(features))
        except rbd.ImageExists:
            _check_same_image(ioctx, pool, name, owner)
        with rbd.Image(ioctx, name) as image:
            for key, value in {**metadata, OWNER_KEY: owner}.items():
                image.metadata_set(key, value)


def _check_same_image(ioctx, pool: str, name: str, owner: str) -> None:
    with rbd.Image(ioctx, name, read_only=True) as image:
        info = _read_info(image)
    if info.owner != owner:
        # A foreign image (or another volume's) that merely has the name: never taken over.
        raise CephAlreadyExists(f"RBD image {pool}/{name} already exists in Ceph and is not this volume",
                                details={"pool": pool, "image": name, "owner": info.owner})


def resize_image(conn: CephConnection, pool: str, name: str, size_bytes: int) -> None:
    with conn.operation("rbd.resize", f"resizing RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
        with rbd.Image(ioctx, name) as image:
            if image.size() != size_bytes:
                image.resize(size_bytes, allow_shrink=True)


def remove_image(conn: CephConnection, pool: str, name: str) -> None:
    try:
        with conn.operation("rbd.remove", f"removing RBD image {pool}/{name}"), conn.ioctx(pool) as ioctx:
            rbd.RBD().remove(ioctx, name)
    except CephNotFound:
        return


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
