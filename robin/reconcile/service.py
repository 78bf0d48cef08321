"""Converge the database and Ceph after crashes: finish or undo every row left in a transitional
state, and report the drift it cannot decide without touching it (robin.audit.drift finds it).

Only rows untouched for `older_than` seconds are taken, so an operation still under way in a
worker is never mistaken for one that crashed. Every step re-runs idempotent Ceph calls, so a
reconcile interrupted half-way is finished by the next one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from robin import config
from robin.audit.drift import find_drift
from robin.ceph import CephError, cephx_users, rbd_ops
from robin.db import db, utcnow
from robin.errors import RobinError, api_error
from robin.snapshots import service as snapshots
from robin.snapshots.models import Snapshot, SnapshotState
from robin.snapshots.service import TEMPORARY_SNAPSHOT_PREFIX
from robin.volumes import cephfs_clones
from robin.volumes import service as volumes
from robin.volumes.kinds import KINDS, Kind, kind_of
from robin.volumes.models import CephfsPath, RbdImage, Volume, VolumeState

log = logging.getLogger(__name__)
# Clock skew allowed between robin's hosts and Ceph's when telling whether an unmarked object
# was made by the row's create.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class Report:
    fixed: list[dict] = field(default_factory=list)
    drift: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def note(self, bucket: str, kind: str, subject, **evidence) -> None:
        getattr(self, bucket).append({"kind": kind, "id": subject.id, "name": subject.name, **evidence})


def reconcile(older_than: timedelta = timedelta(minutes=5), survey_drift: bool = True) -> Report:
    """Converge what is stuck; with survey_drift, also survey the drift (the maintenance loop surveys
    on its own, slower schedule: robin.audit.drift.survey_if_due)."""
    report = Report()
    cutoff = utcnow() - older_than
    for kind in KINDS:
        for volume in _stuck(kind.model, STUCK_VOLUME_STATES, cutoff):
            _guarded(report, volume, lambda v=volume, k=kind: _converge_volume(k, v, report))
        for volume in volumes.unfinished_purges(kind.model, cutoff):
            _guarded(report, volume, lambda v=volume, k=kind: _finish_purge(k, v, report))
    for snapshot in _stuck(Snapshot, STUCK_SNAPSHOT_STATES, cutoff):
        _guarded(report, snapshot, lambda s=snapshot: _converge_snapshot(s, report))
    for image in _clones(cutoff):
        _guarded(report, image, lambda i=image: _converge_clone(i, report))
    for path in _recently_deleted_paths(cutoff):
        _guarded(report, path, lambda p=path: cephx_users.deauthorize(volumes.ceph_connection(p), p.id))
    if survey_drift:
        drift = find_drift(older_than)
        report.drift += drift.findings
        report.errors += drift.errors
    return report


STUCK_VOLUME_STATES = (VolumeState.CREATING, VolumeState.RESIZING, VolumeState.ROLLING_BACK, VolumeState.FLATTENING,
                       VolumeState.DELETING, VolumeState.ERROR)
STUCK_SNAPSHOT_STATES = (SnapshotState.CREATING, SnapshotState.DELETING, SnapshotState.ERROR)


# How far back the CephFS paths deleted before the cutoff are looked at again for a cephx user a crash left (one
# made by a request for credentials racing the delete): a few rounds of the maintenance loop, so each costs the
# monitors a few idempotent `auth rm`, not one per path ever deleted. A path in the trash loses it again when purged.
RECENT_DELETES = timedelta(minutes=15)


def _recently_deleted_paths(cutoff: datetime) -> list[CephfsPath]:
    with db.reading() as session:
        return list(session.scalars(select(CephfsPath).where(
            CephfsPath.state == VolumeState.DELETED, CephfsPath.deleted_at > cutoff - RECENT_DELETES,
            CephfsPath.deleted_at <= cutoff)))


def _stuck(model, transitional, cutoff: datetime) -> list:
    with db.reading() as session:
        return list(session.scalars(select(model).where(model.state.in_(transitional), model.updated_at <= cutoff)))


def _clones(cutoff: datetime) -> list[RbdImage]:
    with db.reading() as session:
        return list(session.scalars(select(RbdImage).where(
            RbdImage.parent_id.is_not(None), RbdImage.state == VolumeState.AVAILABLE, RbdImage.updated_at <= cutoff)))


def _guarded(report: Report, subject, step) -> None:
    try:
        step()
    except (RobinError, CephError) as exc:
        code = api_error(exc).code  # e.g. ceph_unavailable: worth another round soon; ceph_not_found: look
        log.warning("reconcile step failed", extra={"id": subject.id, "code": code, "error": exc.message})
        report.note("errors", "ceph_error", subject, error=exc.message, code=code)


# --- volumes ------------------------------------------------------------------------------------

def _converge_volume(kind: Kind, volume: Volume, report: Report) -> None:
    if cephfs_clones.cloning(volume):
        _converge_cephfs_clone(volume, report)
    elif volume.state is VolumeState.CREATING and volume.trash_ref is not None:
        _converge_restore(kind, volume, report)
    elif volume.state in (VolumeState.CREATING, VolumeState.ERROR):
        _converge_create(kind, volume, report)
    elif volume.state is VolumeState.RESIZING:
        kind.resize(volumes.ceph_connection(volume), volume, volume.target_size_bytes)
        volumes.set_state(volume, VolumeState.AVAILABLE, size_bytes=volume.target_size_bytes, target_size_bytes=None)
        report.note("fixed", "resize_finished", volume, size_bytes=volume.size_bytes)
    elif volume.state is VolumeState.ROLLING_BACK:
        _finish_rollback(volume, report)
    elif volume.state is VolumeState.FLATTENING:
        rbd_ops.flatten(volumes.ceph_connection(volume), volume.pool, volume.name)
        snapshots.finish_flatten(volume)
        report.note("fixed", "flatten_finished", volume)
    elif volume.state is VolumeState.DELETING:
        _finish_delete(kind, volume, report)


def _converge_cephfs_clone(volume: CephfsPath, report: Report) -> None:
    """A CephFS clone left `creating` (robin does not wait for the mgr's copy, and a worker may have died): finish
    it if the mgr completed it, drop it if it failed or was never started, else leave it copying."""
    try:
        settled = cephfs_clones.settle(volume, cutoff=volume.updated_at)
    except cephfs_clones.CloneFailed as exc:
        report.note("fixed", "clone_dropped", volume, reason=exc.message)
        return
    if settled.state is VolumeState.AVAILABLE:
        report.note("fixed", "clone_finished", volume)


def _finish_purge(kind: Kind, volume: Volume, report: Report) -> None:
    volumes.purge(kind, volume)
    report.note("fixed", "purge_finished", volume)


def _finish_rollback(image: RbdImage, report: Report) -> None:
    """A rollback cut short leaves the image with blocks of before and of the snapshot: roll it back
    again (idempotent), never merely resize it. An image someone has open is left alone: that is a
    rollback still running in a worker (however long it takes), or a user who mapped it meanwhile;
    a dead worker's watch expires within Ceph's watch timeout, and the next round finishes it."""
    conn, snapshot = volumes.ceph_connection(image), image.rollback_snapshot
    watchers = rbd_ops.watchers(conn, image.pool, image.name)
    if watchers:
        report.note("errors", "rollback_in_progress", image, snapshot=snapshot, watchers=watchers)
        return
    rbd_ops.rollback(conn, image.pool, image.name, snapshot)
    snapshots.finish_rollback(image)
    report.note("fixed", "rollback_finished", image, snapshot=snapshot)


def _converge_create(kind: Kind, volume: Volume, report: Report) -> None:
    """The create may have happened: finish it if the object is robin's (marked with this row's
    id, or unmarked but made after the row); drop the row if nothing was made; else report."""
    conn = volumes.ceph_connection(volume)
    observed = kind.inspect(conn, volume)
    ours = observed.owner == volume.id or (
        observed.exists and observed.owner is None and observed.created_at >= volume.created_at - CLOCK_SKEW)
    if observed.exists and ours:
        made = _finish_create(kind, conn, volume)
        volumes.set_state(volume, VolumeState.AVAILABLE, error_message=None, **made)
        report.note("fixed", "create_finished", volume)
    elif not observed.exists:
        if isinstance(volume, RbdImage) and volume.parent_id is not None:
            _remove_temporary_snapshot(conn, volume)
        with db.unit_of_work() as session:
            session.execute(type(volume).__table__.delete().where(type(volume).id == volume.id))
        report.note("fixed", "create_undone", volume)
    else:
        # In the drift audit's shape, like the rest of the report's drift.
        report.drift.append({"kind": "name_held_by_foreign_object", "project": volume.project.name, "evidence": {
            "cluster": volume.cluster.name, "name": volume.name, "volume_id": volume.id, "owner": observed.owner}})


def _converge_restore(kind: Kind, volume: Volume, report: Report) -> None:
    """A restore cut short: the row left `creating` with its place in the trash (trash_ref). Finish it when the
    volume is back where it lives, robin's by its mark; else it is still in the trash: the row goes back there as
    it was, its quota released, restorable again until its purge time. Undone as a create, the row would go and
    leave the volume in the trash for good, neither restorable nor ever purged."""
    observed = kind.inspect(volumes.ceph_connection(volume), volume)
    if observed.exists and observed.owner == volume.id:
        volumes.set_state(volume, VolumeState.AVAILABLE, deleted_at=None, purge_after=None, trash_ref=None,
                          error_message=None)
        report.note("fixed", "restore_finished", volume)
    else:
        volumes.set_state(volume, VolumeState.DELETED)
        report.note("fixed", "restore_undone", volume)


def _finish_create(kind: Kind, conn, volume: Volume) -> dict:
    """Finish making the volume; the columns to record with its outcome (kind.create's)."""
    kind.mark_owner(conn, volume)
    made = {}
    if isinstance(volume, RbdImage) and volume.parent_id is not None:
        _remove_temporary_snapshot(conn, volume)
    else:
        made = kind.create(conn, volume)  # idempotent now that it is marked: sets what a crash skipped
    if kind.inspect(conn, volume).size_bytes != volume.size_bytes:
        kind.resize(conn, volume, volume.size_bytes)
    return made


def _remove_temporary_snapshot(conn, clone: RbdImage) -> None:
    if clone.parent_snapshot and clone.parent_snapshot.startswith(TEMPORARY_SNAPSHOT_PREFIX):
        with db.reading() as session:
            parent = session.get(RbdImage, clone.parent_id)
        rbd_ops.remove_snapshot(conn, parent.pool, parent.name, clone.parent_snapshot)


def _finish_delete(kind: Kind, volume: Volume, report: Report) -> None:
    """Whether trash or purge was asked for is not recorded, so finish into the trash: the safe
    side, restorable, and purged in due course."""
    conn = volumes.ceph_connection(volume)
    with db.reading() as session:
        snapshots = list(session.scalars(select(Snapshot).where(
            getattr(Snapshot, kind.snapshot_fk) == volume.id, Snapshot.state == SnapshotState.DELETING)))
    for snapshot in snapshots:
        _remove_snapshot(kind, snapshot)
    delay = config.current().trash_delay
    trash_ref = kind.trash(conn, volume, delay)
    now = utcnow()
    if trash_ref is None:
        kind.remove(conn, volume)
        volumes.set_state(volume, VolumeState.DELETED, deleted_at=now, purged_at=now)
    else:
        volumes.set_state(volume, VolumeState.DELETED, deleted_at=now, trash_ref=trash_ref,
                          purge_after=now + timedelta(seconds=delay))
    report.note("fixed", "delete_finished", volume)


# --- snapshots and clones -------------------------------------------------------------------------

def _converge_snapshot(snapshot: Snapshot, report: Report) -> None:
    kind = kind_of(snapshot.volume)
    if snapshot.state is SnapshotState.DELETING:
        _remove_snapshot(kind, snapshot)
        report.note("fixed", "snapshot_delete_finished", snapshot)
    elif kind.snapshot_exists(volumes.ceph_connection(snapshot.volume), snapshot.volume, snapshot.name):
        snapshots.set_state(snapshot, SnapshotState.AVAILABLE, error_message=None)
        report.note("fixed", "snapshot_create_finished", snapshot)
    else:
        with db.unit_of_work() as session:
            session.execute(Snapshot.__table__.delete().where(Snapshot.id == snapshot.id))
        report.note("fixed", "snapshot_create_undone", snapshot)


def _remove_snapshot(kind: Kind, snapshot: Snapshot) -> None:
    kind.remove_snapshot(volumes.ceph_connection(snapshot.volume), snapshot.volume, snapshot.name)
    snapshots.set_state(snapshot, SnapshotState.DELETED, deleted_at=utcnow())


def _converge_clone(image: RbdImage, report: Report) -> None:
    """A flatten that crashed before its commit: Ceph has no parent any more, the row still does."""
    observed = rbd_ops.inspect(volumes.ceph_connection(image), image.pool, image.name)
    if observed.exists and observed.parent is None:
        volumes.set_state(image, VolumeState.AVAILABLE, parent_id=None, parent_snapshot=None)
        report.note("fixed", "flatten_recorded", image)
    # A clone whose image is gone is the drift audit's `missing_image`.
