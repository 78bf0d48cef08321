"""Snapshots of both kinds of volume, and RBD rollback: the same two-commit pattern as volumes.

Crash states for the reconciler: a snapshot row in `creating` (the snapshot may exist -> keep it
and mark it available, since it is robin's volume) or `deleting` (remove it again, idempotently).
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from robin.auth.identity import Identity
from robin.ceph import rbd_ops
from robin.db import db, utcnow
from robin.errors import Conflict, NotFound, RobinError
from robin.pagination import Page, paginate
from robin.projects import service as projects
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes import service as volumes
from robin.volumes.kinds import RBD, Kind
from robin.volumes.models import Volume


def _live(kind: Kind, volume: Volume):
    return select(Snapshot).where(getattr(Snapshot, kind.snapshot_fk) == volume.id,
                                  Snapshot.state != SnapshotState.DELETED)


def _find(session: Session, kind: Kind, volume: Volume, name: str) -> Snapshot:
    snapshot = session.scalar(_live(kind, volume).where(Snapshot.name == name))
    if snapshot is None:
        raise NotFound(f"{kind.noun} {volume.name!r} has no snapshot {name!r}", code="snapshot_not_found",
                       details={"volume": volume.name, "snapshot": name})
    return snapshot


def _set_state(snapshot: Snapshot, state: SnapshotState, **values) -> Snapshot:
    values = {"state": state, "updated_at": utcnow(), **values}
    with db.writing() as connection:
        connection.execute(Snapshot.__table__.update().where(Snapshot.id == snapshot.id).values(**values))
    for key, value in values.items():
        setattr(snapshot, key, value)
    return snapshot


def create(identity: Identity, kind: Kind, project: str, volume_name: str, name: str) -> Snapshot:
    identity.require_write(project)
    snapshot = _reserve(kind, project, volume_name, name)
    volume = snapshot.volume
    try:
        kind.create_snapshot(volumes.ceph_connection(volume), volume, name)
    except RobinError as exc:
        _undo_create(kind, snapshot, exc)
        raise
    return _set_state(snapshot, SnapshotState.AVAILABLE)


def _reserve(kind: Kind, project: str, volume_name: str, name: str) -> Snapshot:
    try:
        with db.unit_of_work() as session:
            project_row = projects.lock(session, project)
            volume = volumes.find(session, kind, project, volume_name)
            volumes.require_available(kind, volume, "snapshotted")
            projects.reserve(session, project_row, add_snapshots=1)
            snapshot = Snapshot(project_id=project_row.id, name=name, size_bytes=volume.size_bytes,
                                state=SnapshotState.CREATING, **{kind.snapshot_relation: volume})
            session.add(snapshot)
            session.flush()
            return snapshot
    except IntegrityError as exc:
        raise Conflict(f"{kind.noun} {volume_name!r} already has a snapshot {name!r}", code="snapshot_exists",
                       details={"volume": volume_name, "snapshot": name}) from exc


def _undo_create(kind: Kind, snapshot: Snapshot, cause: RobinError) -> None:
    try:
        kind.remove_snapshot(volumes.ceph_connection(snapshot.volume), snapshot.volume, snapshot.name)
    except RobinError:
        _set_state(snapshot, SnapshotState.ERROR, error_message=f"create failed: {cause.message}")
        return
    with db.unit_of_work() as session:
        session.execute(Snapshot.__table__.delete().where(Snapshot.id == snapshot.id))


def list_page(identity: Identity, kind: Kind, project: str, volume_name: str, limit: int,
              cursor: str | None) -> Page:
    identity.require_read(project)
    with db.reading() as session:
        volume = volumes.find(session, kind, project, volume_name)
        return paginate(session, _live(kind, volume), Snapshot.name, limit, cursor)


def get(identity: Identity, kind: Kind, project: str, volume_name: str, name: str) -> Snapshot:
    identity.require_read(project)
    with db.reading() as session:
        return _find(session, kind, volumes.find(session, kind, project, volume_name), name)


def delete(identity: Identity, kind: Kind, project: str, volume_name: str, name: str) -> None:
    identity.require_write(project)
    with db.unit_of_work() as session:
        snapshot = _find(session, kind, volumes.find(session, kind, project, volume_name), name)
        previous = snapshot.state
        snapshot.state = SnapshotState.DELETING
    remove(kind, snapshot, previous)


def remove(kind: Kind, snapshot: Snapshot, previous: SnapshotState) -> None:
    """Remove a snapshot whose row is already `deleting`; on failure put the row back."""
    try:
        kind.remove_snapshot(volumes.ceph_connection(snapshot.volume), snapshot.volume, snapshot.name)
    except RobinError:
        _set_state(snapshot, previous)
        raise
    _set_state(snapshot, SnapshotState.DELETED, deleted_at=utcnow())


def rollback(identity: Identity, project: str, image_name: str, name: str) -> Snapshot:
    """Roll an RBD image back to a snapshot; refused while anything has the image open or locked,
    since rewriting blocks under a mounted file system corrupts it."""
    identity.require_write(project)
    with db.unit_of_work() as session:
        image = volumes.find(session, RBD, project, image_name)
        snapshot = _find(session, RBD, image, name)
        volumes.require_available(RBD, image, "rolled back")
    conn = volumes.ceph_connection(image)
    users = rbd_ops.users(conn, image.pool, image.name)
    if users:
        raise Conflict(f"RBD image {image_name!r} is in use ({'; '.join(users)}); unmap or stop what uses it, "
                       "then roll back", code="volume_in_use", details={"users": users})
    rbd_ops.rollback(conn, image.pool, image.name, name)
    return snapshot


def live_snapshots(session: Session, kind: Kind, volume: Volume) -> list[Snapshot]:
    return list(session.scalars(_live(kind, volume)))
