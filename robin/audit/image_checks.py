"""What the drift survey knows of each RBD image, at a bounded number of image opens per survey.

Opening an image (its size, snapshots, parent) costs several OSD round trips; a pool's listing and its
images' header signatures (rbd_ops.header_signatures: batched omap reads) cost a few whatever the pool's
size. So a survey opens an image only when its header changed since robin last opened it (or it never
did), and takes the others' details from that last check, kept in the table drift_image_checks. It
opens at most a budget of images per pool (ROBIN_DRIFT_OPENS): changed ones first (those of live rows,
then others robin's ownership directory marks, then foreign ones), and at least a quarter of the
budget goes to re-opening the images checked longest ago, unchanged or not, so that every image is
opened again within ceil(4 x images / budget) surveys whatever the header says. Changed images past
the budget are deferred: this survey reports nothing about their size or snapshots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, select

from robin.audit.models import CHUNK, DriftImageCheck, upsert
from robin.ceph import rbd_ops
from robin.ceph.connection import CephConnection
from robin.ceph.rbd_ops import ImageDetails
from robin.db import db, utcnow

NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass
class OpenBudget:
    """The image opens a survey may make in each pool (limit None: no bound, a full survey), and what it
    did in all pools."""

    limit: int | None
    images: int = 0
    opened: int = 0
    deferred: int = 0

    def coverage(self) -> dict:
        return {"rbd_images": self.images, "opened": self.opened, "deferred": self.deferred,
                "from_last_check": self.images - self.opened - self.deferred, "open_limit": self.limit}

    def take(self, changed: list[str], unchanged: list[str]) -> list[str]:
        """Which images of a pool to open, from both lists (each in the order to open them); at least a
        quarter of the limit goes to the unchanged ones."""
        if self.limit is None:
            return changed + unchanged
        reserved = min(len(unchanged), self.limit // 4)
        first = changed[:self.limit - reserved]
        second = unchanged[:self.limit - len(first)]
        self.deferred += len(changed) - len(first)
        return first + second


@dataclass
class Checked:
    """A pool's images as this survey knows them: details by name (opened now, or unchanged since their
    last check), and the names it knows nothing more of (deferred, or gone when opened)."""

    details: dict[str, ImageDetails] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)


def check_images(conn: CephConnection, cluster_id: int, pool: str, listing: rbd_ops.PoolListing,
                 budget: OpenBudget, live: set[str]) -> Checked:
    """`live`: the names of the pool's live rows, whose changed images are opened first."""
    signatures = rbd_ops.header_signatures(conn, pool, listing.images.values())
    checks = _load(cluster_id, pool)
    unchanged: dict[str, ImageDetails] = {}
    for name, image_id in listing.images.items():
        check = checks.get(image_id)
        if check is not None and check.details is not None and check.signature is not None \
                and check.signature == signatures.get(image_id):
            unchanged[name] = _from_json(name, check.details)
    budget.images += len(listing.images)

    def checked_at(name: str) -> datetime:
        check = checks.get(listing.images[name])
        return check.checked_at if check else NEVER

    # Changed: live rows' images, then others robin marked, then foreign ones; the oldest check first.
    changed = sorted((name for name in listing.images if name not in unchanged),
                     key=lambda name: (name not in live, name not in listing.owners, checked_at(name), name))
    oldest_first = sorted(unchanged, key=lambda name: (checked_at(name), name))
    opened = {name: rbd_ops.describe_image(conn, pool, name) for name in budget.take(changed, oldest_first)}
    budget.opened += len(opened)
    _store(cluster_id, pool, {listing.images[name]: (signatures.get(listing.images[name]), found)
                              for name, found in opened.items()})
    _forget(cluster_id, pool, set(checks) - set(listing.images.values()))
    checked = Checked()
    for name in listing.images:
        found = opened[name] if name in opened else unchanged.get(name)
        if found is None:  # deferred, or removed since the listing
            checked.unknown.add(name)
        else:
            checked.details[name] = found
    return checked


def _load(cluster_id: int, pool: str) -> dict[str, DriftImageCheck]:
    with db.reading() as session:
        return {check.image_id: check for check in session.scalars(
            select(DriftImageCheck).where(DriftImageCheck.cluster_id == cluster_id, DriftImageCheck.pool == pool))}


def _store(cluster_id: int, pool: str, opened: dict[str, tuple[str | None, ImageDetails | None]]) -> None:
    """The signature is the one read before the open: a header changed in between reads differently at
    the next survey, which opens the image again."""
    if not opened:
        return
    now = utcnow()
    rows = [{"cluster_id": cluster_id, "pool": pool, "image_id": image_id, "signature": signature,
             "details": _as_json(found), "checked_at": now} for image_id, (signature, found) in opened.items()]
    with db.unit_of_work() as session:
        upsert(session, DriftImageCheck, (DriftImageCheck.cluster_id, DriftImageCheck.pool,
                                          DriftImageCheck.image_id), rows)


def _forget(cluster_id: int, pool: str, image_ids: set[str]) -> None:
    """The checks of images no longer in the pool."""
    gone = sorted(image_ids)
    if not gone:
        return
    with db.unit_of_work() as session:
        for start in range(0, len(gone), CHUNK):
            session.execute(delete(DriftImageCheck).where(
                DriftImageCheck.cluster_id == cluster_id, DriftImageCheck.pool == pool,
                DriftImageCheck.image_id.in_(gone[start:start + CHUNK])))


def _as_json(found: ImageDetails | None) -> dict | None:
    if found is None:
        return None
    return {"size_bytes": found.size_bytes, "features": list(found.features),
            "created_at": found.created_at.isoformat(), "parent": list(found.parent) if found.parent else None,
            "snapshots": found.snapshots}


def _from_json(name: str, details: dict) -> ImageDetails:
    parent = details["parent"]
    return ImageDetails(name, details["size_bytes"], tuple(details["features"]),
                        datetime.fromisoformat(details["created_at"]), tuple(parent) if parent else None,
                        details["snapshots"])
