"""RBD image operations. Every mutation is idempotent, as retries and the reconciler need:
creating an equal image succeeds, removing a missing one succeeds, and a different image
under the same name is CephAlreadyExists."""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import rados
import rbd

from robin.ceph.connection import CephConnection, CephHandle, progress, progress_reporter
from robin.ceph.errors import CephAlreadyExists, CephBusy, CephNotFound

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
# Trashed images are marked too, by trash id (_trash_key): several may share a name there.
DIRECTORY_OBJECT = "robin.rbd_directory"
# librbd's exclusive lock is a lock on the image header under this tag; advisory locks (`rbd lock add`) carry
# their own.
EXCLUSIVE_LOCK_TAG = "internal"
# librbd reports a removal's progress once per object of the image (256 times a GiB), each report a Python call
# from one of its own threads that takes the interpreter's lock and makes a thread state: 1.7 to 21 ms a GiB on a
# loaded machine (BENCHMARKS.md). Only a removal that could outlast the connection's timeout needs the reports, to
# keep its deadline away while it advances; one that cannot, even at the slowest rate assumed here, runs as any
# other call and is cut off at the deadline. The rate: librbd removes 10 objects at once
# (rbd_concurrent_management_ops), so 100 a second is an OSD taking 100 ms to remove each (a stressed HDD), where
# the dev cluster removes some 10,000 a second. Objects are counted at Ceph's default size (rbd_default_order 22),
# which robin's creates and clones get; an adopted image with smaller ones has more, which that margin covers.
OBJECT_BYTES = 4 * 2**20
SLOWEST_REMOVALS_PER_S = 100


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
    def read(ioctx: rados.Ioctx) -> ImageInfo:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return ImageInfo(size_bytes=image.size(), features=feature_names(image.features()))

    return conn.in_pool(pool, "rbd.stat", f"reading RBD image {pool}/{name}", read)


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
    return conn.in_pool(pool, "rbd.owner", f"reading the owner of RBD image {pool}/{name}",
                        lambda ioctx: _owner(ioctx, name))


def create_image(conn: CephConnection, pool: str, name: str, size_bytes: int, features, owner: str,
                 metadata: dict[str, str]) -> None:
    conn.in_pool(pool, "rbd.create", f"creating RBD image {pool}/{name}", lambda ioctx: _make_owned(
        ioctx, pool, name, owner, metadata, lambda: rbd.RBD().create(
            ioctx, name, size_bytes, old_format=False, features=feature_mask(features))))


def _make_owned(ioctx: rados.Ioctx, pool: str, name: str, owner: str, metadata: dict[str, str], make) -> None:
    """Run `make`, which creates the image; one that exists already counts as made only if robin
    recorded this owner for it. The mark comes after the image: a crash in between leaves an
    unmarked image, which the reconciler judges by its creation time and never deletes on a guess."""
    try:
        make()
    except rbd.ImageExists:
        found = _owner(ioctx, name)
        if found != owner:
            raise CephAlreadyExists(f"RBD image {pool}/{name} already exists in Ceph and is not this volume",
                                    details={"pool": pool, "image": name, "owner": found}) from None
    _set_owner(ioctx, name, owner)
    _set_metadata(ioctx, name, metadata)


def _set_metadata(ioctx: rados.Ioctx, name: str, metadata: dict[str, str]) -> None:
    if metadata:  # only then: opening the image for it costs more than the create
        with rbd.Image(ioctx, name) as image:
            for key, value in metadata.items():
                image.metadata_set(key, value)


def resize_image(conn: CephConnection, pool: str, name: str, size_bytes: int) -> None:
    def resize(ioctx: rados.Ioctx) -> None:
        with rbd.Image(ioctx, name) as image:
            if image.size() != size_bytes:
                image.resize(size_bytes, allow_shrink=True)

    conn.in_pool(pool, "rbd.resize", f"resizing RBD image {pool}/{name}", resize)


def remove_image(conn: CephConnection, pool: str, name: str, size_bytes: int) -> None:
    """`size_bytes`: the image's size as robin knows it, which says whether its removal reports progress."""
    def remove(ioctx: rados.Ioctx) -> None:
        try:
            rbd.RBD().remove(ioctx, name, on_progress=_removal_progress(conn, size_bytes))
        except rbd.ImageNotFound:
            pass  # already gone: removing is idempotent
        _set_owner(ioctx, name, None)

    conn.in_pool(pool, "rbd.remove", f"removing RBD image {pool}/{name}", remove)


def _removal_progress(conn: CephConnection, size_bytes: int) -> Callable[[int, int], int] | None:
    """On the call's thread: librbd's progress callback for removing an image of this size, or None when the
    removal cannot outlast the timeout (SLOWEST_REMOVALS_PER_S)."""
    if math.ceil(size_bytes / OBJECT_BYTES) <= SLOWEST_REMOVALS_PER_S * conn.timeout:
        return None
    return _progress_callback()


def _progress_callback() -> Callable[[int, int], int]:
    """On the call's thread: a librbd progress callback that keeps the call's deadline away while it advances."""
    report = progress_reporter()

    def progressed(_done: int, _total: int) -> int:
        report()
        return 0

    return progressed


def used_bytes(conn: CephConnection, pool: str, name: str) -> int:
    return measure_image(conn, pool, name).used_bytes


# How a used-bytes figure was measured: from the object map, or (when the image has none, or
# librbd marked it invalid after an unclean shutdown or a feature change) by asking every object.
FAST_DIFF, FULL_SCAN, NO_MAP = "fast-diff", "full-scan (object map invalid)", "full-scan (no object map)"
MAP_INVALID = rbd.RBD_FLAG_OBJECT_MAP_INVALID | rbd.RBD_FLAG_FAST_DIFF_INVALID


@dataclass(frozen=True)
class Measured:
    used_bytes: int
    method: str


def measure_image(conn: CephConnection, pool: str, name: str) -> Measured:
    """Allocated bytes, rounded up to whole objects, and whether the object map gave them. With
    whole_object=True librbd answers from the object map when it is valid and otherwise falls back
    to stat-ing each object itself, exact but one OSD round trip per object: the method says which."""
    total = 0

    def count(_offset: int, length: int, exists: bool) -> int:
        nonlocal total
        progress()  # a full scan asks every object: slow on a big image, yet advancing
        if exists:
            total += length
        return 0

    def measure(ioctx: rados.Ioctx) -> str:
        with rbd.Image(ioctx, name, read_only=True) as image:
            if not image.features() & rbd.RBD_FEATURE_FAST_DIFF:
                method = NO_MAP
            else:
                method = FULL_SCAN if image.flags() & MAP_INVALID else FAST_DIFF
            image.diff_iterate(0, image.size(), None, count, whole_object=True)
        return method

    method = conn.in_pool(pool, "rbd.du", f"measuring RBD image {pool}/{name}", measure)
    return Measured(total, method)


def list_images(conn: CephConnection, pool: str) -> list[str]:
    return conn.in_pool(pool, "rbd.list", f"listing RBD pool {pool}", rbd.RBD().list)


# --- snapshots, rollback, clones -----------------------------------------------------------------

def create_snapshot(conn: CephConnection, pool: str, name: str, snapshot: str) -> None:
    def snap(ioctx: rados.Ioctx) -> None:
        with rbd.Image(ioctx, name) as image:
            try:
                image.create_snap(snapshot)
            except rbd.ImageExists:
                pass  # the image is robin's, so a snapshot of that name is this one, taken before

    conn.in_pool(pool, "rbd.snap_create", f"snapshotting RBD image {pool}/{name}@{snapshot}", snap)


def remove_snapshot(conn: CephConnection, pool: str, name: str, snapshot: str) -> None:
    """Idempotent. A snapshot that clones still depend on moves to Ceph's trash namespace (clone v2)
    and disappears with its last clone."""
    def unsnap(ioctx: rados.Ioctx) -> None:
        try:
            with rbd.Image(ioctx, name) as image:
                image.remove_snap(snapshot)
        except rbd.ImageNotFound:
            pass  # the snapshot, or its image, is gone already

    conn.in_pool(pool, "rbd.snap_remove", f"removing snapshot {pool}/{name}@{snapshot}", unsnap)


def list_snapshots(conn: CephConnection, pool: str, name: str) -> list[str]:
    def snaps(ioctx: rados.Ioctx) -> list[str]:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return [snap["name"] for snap in image.list_snaps()]

    return conn.in_pool(pool, "rbd.snap_list", f"listing snapshots of {pool}/{name}", snaps)


def users(conn: CephConnection, pool: str, name: str) -> list[str]:
    """Who has the image open or locked, other than robin's own connection: its watchers (a mapped
    or opened image has one) and exclusive-lock owners."""
    def read(handle: CephHandle) -> list[str]:
        with rbd.Image(handle.ioctx(pool), name, read_only=True) as image:
            return _users(handle, image)

    return conn.call("rbd.status", f"reading the users of {pool}/{name}", read, lane=f"pool {pool}")


def _users(handle: CephHandle, image: rbd.Image) -> list[str]:
    """On an image opened read-only: that open registers no watch (a read-write one adds a watch and its
    removal, two more round trips, and only it answers lock_get_owners) and reads the header's lockers, the
    exclusive lock's holder among them, in its own round trips."""
    lockers = image.list_lockers()
    owners = [f"lock owner {address}" for _client, _cookie, address in
              (lockers["lockers"] if lockers and lockers["tag"] == EXCLUSIVE_LOCK_TAG else ())]
    return _watchers(handle, image) + owners


def watchers(conn: CephConnection, pool: str, name: str) -> list[str]:
    """Who has the image open, other than robin's own connection. Unlike users(), a lock owner
    without a watch does not count: that client died holding the lock, which librbd breaks when
    the next client needs it."""
    def read(handle: CephHandle) -> list[str]:
        with rbd.Image(handle.ioctx(pool), name, read_only=True) as image:
            return _watchers(handle, image)

    return conn.call("rbd.status", f"reading the watchers of {pool}/{name}", read, lane=f"pool {pool}")


def _watchers(handle: CephHandle, image: rbd.Image) -> list[str]:
    me = handle.rados.get_instance_id()
    return [f"watcher client.{w['id']} at {w['addr']}" for w in image.watchers_list() if w["id"] != me]


def rollback(conn: CephConnection, pool: str, name: str, snapshot: str) -> None:
    def roll_back(ioctx: rados.Ioctx) -> None:
        with rbd.Image(ioctx, name) as image:
            image.rollback_to_snap(snapshot)

    # rollback_to_snap rewrites every object and reports no progress, so its length grows with the image
    # and it is not cut at the timeout: each OSD write it makes is (rados_osd_op_timeout), so it cannot hang.
    conn.in_pool(pool, "rbd.rollback", f"rolling {pool}/{name} back to {snapshot}", roll_back, patient=True)


def clone(conn: CephConnection, pool: str, parent: str, snapshot: str, name: str, features, owner: str,
          metadata: dict[str, str]) -> None:
    """A copy-on-write clone (format 2: the parent snapshot needs no protection). Idempotent like
    create_image: a clone robin already made under this owner is success."""
    conn.in_pool(pool, "rbd.clone", f"cloning {pool}/{parent}@{snapshot} to {name}", lambda ioctx: _make_owned(
        ioctx, pool, name, owner, metadata, lambda: rbd.RBD().clone(
            ioctx, parent, snapshot, ioctx, name, features=feature_mask(features))))


def flatten(conn: CephConnection, pool: str, name: str) -> None:
    def flat(ioctx: rados.Ioctx) -> None:
        with rbd.Image(ioctx, name) as image:
            try:
                # Always reported: each object's copy-up (a read of up to 4 MiB from the parent and its write)
                # costs far more than the report, and a flatten is no request's hot path.
                image.flatten(on_progress=_progress_callback())
            except rbd.InvalidArgument:
                pass  # no parent (any more): flattening is idempotent

    conn.in_pool(pool, "rbd.flatten", f"flattening {pool}/{name}", flat)


# --- trash ---------------------------------------------------------------------------------------

def trash_move(conn: CephConnection, pool: str, name: str, owner: str, delay_s: int) -> str | None:
    """Move volume `owner`'s image to the Ceph trash; return its trash id, or None when there was no image (a
    volume whose create never reached Ceph). Idempotent: an image this volume already moved is found there by the
    mark robin records before the move. Images of the same name that other volumes left in the trash (a name is
    free again once its volume is deleted, in any project; the trash lists them in no useful order, with deletion
    times in whole seconds) are never taken for it: a restore would hand one to this volume's project, a purge
    destroy it before its time."""
    def move(handle: CephHandle) -> str | None:
        ioctx = handle.ioctx(pool)
        try:
            # One open gives both the id and the users.
            with rbd.Image(ioctx, name, read_only=True) as image:
                image_id, in_use = image.id(), _users(handle, image)
        except rbd.ImageNotFound:
            return _moved_by(ioctx, name, owner)
        # Ceph moves an image that is mapped somewhere without complaint; robin refuses, as a
        # remove would (EBUSY).
        if in_use:
            raise CephBusy(f"RBD image {pool}/{name} is in use ({'; '.join(in_use)})",
                           details={"pool": pool, "image": name, "users": in_use})
        _set_owner(ioctx, _trash_key(image_id), owner)
        try:
            rbd.RBD().trash_move(ioctx, name, delay_s)
        except rbd.ImageNotFound:
            # Gone since the open: a remove still running in librbd (a `?purge=true` robin stopped waiting for)
            # ended, or another move of this volume's won. As after the open, the trash says which.
            moved = _moved_by(ioctx, name, owner)
            if moved != image_id:
                _set_owner(ioctx, _trash_key(image_id), None)  # no trash entry holds it: no mark either
            return moved
        return image_id

    return conn.call("rbd.trash_move", f"moving RBD image {pool}/{name} to the trash", move, lane=f"pool {pool}")


def _trash_key(image_id: str) -> str:
    """A trashed image's key in DIRECTORY_OBJECT (trash id -> volume id): no image name holds a "/"."""
    return f"trash/{image_id}"


def _moved_by(ioctx: rados.Ioctx, name: str, owner: str) -> str | None:
    """The trash id of the image named `name` that volume `owner` moved to the trash, if any."""
    found = [entry["id"] for entry in rbd.RBD().trash_list(ioctx) if entry["name"] == name]
    return next((image_id for image_id in found if _owner(ioctx, _trash_key(image_id)) == owner), None)


def trash_restore(conn: CephConnection, pool: str, image_id: str, name: str) -> None:
    def restore(ioctx: rados.Ioctx) -> None:
        try:
            rbd.RBD().trash_restore(ioctx, image_id, name)
        except rbd.ImageNotFound:
            if _image_id(ioctx, name) != image_id:  # not restored before either: it is gone
                raise CephNotFound(f"RBD image {pool}/{name} is no longer in the trash",
                                   details={"pool": pool, "image": name}) from None
        _set_owner(ioctx, _trash_key(image_id), None)

    conn.in_pool(pool, "rbd.trash_restore", f"restoring RBD image {pool}/{name} from the trash", restore)


def _image_id(ioctx: rados.Ioctx, name: str) -> str | None:
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return image.id()
    except rbd.ImageNotFound:
        return None

def trash_purge(conn: CephConnection, pool: str, image_id: str, name: str, owner: str, size_bytes: int) -> None:
    """Remove volume `owner`'s image from the trash now (robin keeps its own purge time) and forget it: its trash
    mark, and its name's mark unless a newer volume's image holds the name now. `size_bytes` as remove_image's."""
    def purge(ioctx: rados.Ioctx) -> None:
        try:
            rbd.RBD().trash_remove(ioctx, image_id, force=True, on_progress=_removal_progress(conn, size_bytes))
        except rbd.ImageNotFound:
            pass  # purged already
        _set_owner(ioctx, _trash_key(image_id), None)
        if _owner(ioctx, name) == owner:
            _set_owner(ioctx, name, None)

    conn.in_pool(pool, "rbd.trash_remove", f"purging RBD image {pool}/{name} from the trash", purge)


# --- what Ceph holds, for the reconciler ---------------------------------------------------------

@dataclass(frozen=True)
class Observed:
    """An object as Ceph has it: whether it exists, who robin recorded as its owner, its size (an
    image's size, a directory's quota), when it was made and (RBD) its parent snapshot."""

    exists: bool
    owner: str | None = None
    size_bytes: int | None = None
    created_at: datetime | None = None
    parent: tuple[str, str] | None = None


def inspect(conn: CephConnection, pool: str, name: str) -> Observed:
    def observe(ioctx: rados.Ioctx) -> Observed:
        owner = _owner(ioctx, name)
        try:
            with rbd.Image(ioctx, name, read_only=True) as image:
                created = image.create_timestamp().replace(tzinfo=UTC)  # the binding gives UTC
                return Observed(True, owner, image.size(), created, _parent_of(image))
        except rbd.ImageNotFound:
            return Observed(False, owner)

    return conn.in_pool(pool, "rbd.inspect", f"inspecting RBD image {pool}/{name}", observe)


def _parent_of(image: rbd.Image) -> tuple[str, str] | None:
    """(image, snapshot) a clone shares blocks with; None for an image that is not a clone."""
    try:
        spec = image.get_parent_image_spec()
    except rbd.ImageNotFound:
        return None
    return spec["image_name"], spec["snap_name"]


def mark_owner(conn: CephConnection, pool: str, name: str, owner: str) -> None:
    conn.in_pool(pool, "rbd.mark", f"recording the owner of {pool}/{name}",
                 lambda ioctx: _set_owner(ioctx, name, owner))


def snapshot_exists(conn: CephConnection, pool: str, name: str, snapshot: str) -> bool:
    try:
        return snapshot in list_snapshots(conn, pool, name)
    except CephNotFound:
        return False


# --- what a pool holds, for the drift audit and adoption --------------------------------------------

@dataclass(frozen=True)
class ImageDetails:
    """An image as Ceph has it, with its user snapshots (name -> size at the snapshot)."""

    name: str
    size_bytes: int
    features: tuple[str, ...]
    created_at: datetime
    parent: tuple[str, str] | None
    snapshots: dict[str, int]


@dataclass(frozen=True)
class TrashEntry:
    image_id: str
    name: str
    deferment_end: datetime


def _details(ioctx: rados.Ioctx, name: str) -> ImageDetails | None:
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            parent = _parent_of(image)
            # Only user snapshots: clone v2 keeps removed-but-needed ones in the trash namespace.
            snapshots = {snap["name"]: snap["size"] for snap in image.list_snaps()
                         if snap.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER}
            return ImageDetails(name, image.size(), feature_names(image.features()),
                                image.create_timestamp().replace(tzinfo=UTC), parent, snapshots)
    except rbd.ImageNotFound:
        return None  # removed between the listing and the open


def describe_image(conn: CephConnection, pool: str, name: str) -> ImageDetails | None:
    return conn.in_pool(pool, "rbd.describe", f"describing RBD image {pool}/{name}",
                        lambda ioctx: _details(ioctx, name))


@dataclass(frozen=True)
class PoolListing:
    images: dict[str, str]  # image name -> librbd's image id
    owners: dict[str, str]  # robin's directory: image name -> volume id
    trash: list[TrashEntry]


def pool_listing(conn: CephConnection, pool: str) -> PoolListing:
    """The pool's images with their ids, robin's ownership directory and the trash, without opening
    any image: a few omap reads whatever the number of images."""
    def survey(ioctx: rados.Ioctx) -> PoolListing:
        images = {entry["name"]: entry["id"] for entry in rbd.RBD().list2(ioctx)}
        trash = [TrashEntry(entry["id"], entry["name"], entry["deferment_end_time"].replace(tzinfo=UTC))
                 for entry in rbd.RBD().trash_list(ioctx)]
        return PoolListing(images, _all_owners(ioctx), trash)

    return conn.in_pool(pool, "rbd.list_pool", f"listing RBD pool {pool}", survey)


# A format-2 image keeps its size, parent and snapshots as omap keys of its header object, which librbd
# rewrites on every resize, flatten and snapshot create or remove. That layout is librbd's own, not an
# API: robin never reads a finding from it, only whether it changed since robin last opened the image
# (a header it cannot read that way is always opened), and it opens every image now and then anyway.
HEADER_OBJECT_PREFIX = "rbd_header."
HEADER_KEYS = ("size", "parent")
SNAPSHOT_KEY_PREFIX = "snapshot_"
HEADER_SNAPSHOTS_READ = 1024  # more snapshot keys than this: no signature, the image is opened
HEADER_READS_IN_FLIGHT = 128


def header_signatures(conn: CephConnection, pool: str, image_ids) -> dict[str, str | None]:
    """Per image id, a digest of its header's size, parent and snapshot keys; None for a header that
    could not be read so (gone, another layout, too many snapshots). Reads go out in batches of
    HEADER_READS_IN_FLIGHT asynchronous omap reads: one OSD round trip a batch, not an image open each."""
    def read(ioctx: rados.Ioctx) -> dict[str, str | None]:
        signatures, ids = {}, list(image_ids)
        for start in range(0, len(ids), HEADER_READS_IN_FLIGHT):
            signatures.update(_read_headers(ioctx, ids[start:start + HEADER_READS_IN_FLIGHT]))
            progress()
        return signatures

    return conn.in_pool(pool, "rbd.header_signatures", f"reading RBD image headers in pool {pool}", read)


def _read_headers(ioctx: rados.Ioctx, image_ids: list[str]) -> dict[str, str | None]:
    pending = []
    try:
        for image_id in image_ids:
            op = ioctx.create_read_op()
            pending.append((image_id, op, ioctx.get_omap_vals_by_keys(op, HEADER_KEYS)[0],
                            ioctx.get_omap_vals(op, "", SNAPSHOT_KEY_PREFIX, HEADER_SNAPSHOTS_READ)[0],
                            ioctx.operate_aio_read_op(op, HEADER_OBJECT_PREFIX + image_id)))
        return {image_id: _signature(completion, fixed, snapshots)
                for image_id, _, fixed, snapshots, completion in pending}
    finally:
        for _, op, *_, completion in pending:
            completion.wait_for_complete()  # before its op is released
            ioctx.release_read_op(op)


def _signature(completion: rados.Completion, fixed, snapshots) -> str | None:
    completion.wait_for_complete()
    if completion.get_return_value() < 0:
        return None
    fixed, snapshots = dict(fixed), list(snapshots)
    if "size" not in fixed or len(snapshots) >= HEADER_SNAPSHOTS_READ:
        return None
    digest = hashlib.sha256()
    for key, value in sorted(fixed.items()) + sorted(snapshots):
        digest.update(len(key).to_bytes(4, "little") + key.encode() + len(value).to_bytes(4, "little") + value)
    return digest.hexdigest()


def _all_owners(ioctx: rados.Ioctx) -> dict[str, str]:
    owners, start = {}, ""
    while True:
        with rados.ReadOpCtx() as op:
            values, _ = ioctx.get_omap_vals(op, start, "", 1000)
            try:
                ioctx.operate_read_op(op, DIRECTORY_OBJECT)
            except rados.ObjectNotFound:
                return owners
            batch = {key: value.decode() for key, value in values}
        progress()
        owners.update((key, value) for key, value in batch.items() if "/" not in key)  # not trash marks
        if len(batch) < 1000:
            return owners
        start = max(batch)
