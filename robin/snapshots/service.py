"""Snapshots of both kinds of volume, and RBD rollback: the same two-commit pattern as volumes.

Crash states for the reconciler: a snapshot row in `creating` (the snapshot may exist -> keep it
and mark it available, since it is robin's volume) or `deleting` (remove it again, idempotently).
"""
from __future__ import annotations

import logging
import uuid
from functools import cache

from sqlalchemy import Connection, bindparam, case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from robin.audit import service as audit
from robin.auth.identity import Identity
from robin.ceph import CephError, rbd_ops
from robin.db import db, utcnow
from robin.errors import BadRequest, Conflict, InvalidInput, NotFound, RobinError
from robin.faults import crash_point
from robin.pagination import Page, decode_cursor, encode_cursor, paginate
from robin.projects import service as projects
from robin.projects.models import Project
from robin.snapshots.models import Snapshot, SnapshotState
from robin.snapshots.schemas import RESERVED_PREFIX
from robin.volumes import service as volumes
from robin.volumes.kinds import RBD, Kind
from robin.volumes.models import CephfsPath, RbdImage, Volume, VolumeState

log = logging.getLogger(__name__)
# Built once: a new INSERT per request computed its cache key again each time.
_INSERT = insert(Snapshot.__table__)
_DELETE = Snapshot.__table__.delete().where(Snapshot.__table__.c.id == bindparam("row_id"))


def _live(kind: Kind, volume: Volume):
    return _live_of(kind, volume.id)


def _live_of(kind: Kind, volume_id):
    # The volume is known: not joining it (with its project, quota and cluster) again saves most
    # of the query; _attach hands it to the snapshots instead.
    return (select(Snapshot).options(lazyload(Snapshot.rbd_image), lazyload(Snapshot.cephfs_path))
            .where(getattr(Snapshot, kind.snapshot_fk) == volume_id, Snapshot.state != SnapshotState.DELETED))


def _attach(kind: Kind, volume: Volume, snapshots: list[Snapshot]) -> list[Snapshot]:
    for snapshot in snapshots:
        set_committed_value(snapshot, kind.snapshot_relation, volume)  # no change to flush
    return snapshots


def _find(session: Session, kind: Kind, volume: Volume, name: str) -> Snapshot:
    snapshot = session.scalar(_named(kind), {"volume_id": volume.id, "name": name})
    if snapshot is None:
        raise _snapshot_not_found(kind, volume.name, name)
    return _attach(kind, volume, [snapshot])[0]


@cache
def _named(kind: Kind):
    # Built once per kind, as _live's listing cannot be (its page adds to it).
    return _live_of(kind, bindparam("volume_id")).where(Snapshot.name == bindparam("name"))


def _snapshot_not_found(kind: Kind, volume_name: str, name: str) -> NotFound:
    return NotFound(f"{kind.noun} {volume_name!r} has no snapshot {name!r}", code="snapshot_not_found",
                    details={"volume": volume_name, "snapshot": name})


def _locked_volume(connection: Connection, kind: Kind, project: str, volume_name: str,
                   snapshot: str | None = None) -> tuple[projects.Locked, Volume, Snapshot | None]:
    """In the caller's write transaction: the project locked (its quota row: every reservation and state change
    of its volumes waits for this transaction), then, read after the lock, its live volume `volume_name` and
    (when `snapshot` is given) that volume's live snapshot of the name, or None."""
    project_row = projects.lock_quota(connection, project)
    volume, values = volumes.find_locked_with_snapshot(connection, kind, project_row, volume_name, snapshot)
    return project_row, volume, None if values is None else _snapshot_of(kind, volume, values)


def _snapshot_of(kind: Kind, volume: Volume, values: dict) -> Snapshot:
    """A snapshot of `volume` made of its column values, its volume set as a loaded one would be."""
    snapshot = Snapshot(**values)
    set_committed_value(snapshot, kind.snapshot_relation, volume)  # no change to flush
    return snapshot


def set_state(snapshot: Snapshot, state: SnapshotState, **values) -> Snapshot:
    """Move the row from the state its writer read, and only from there (a compare-and-set): a
    request or a reconciler that changed it meanwhile wins, and this writer gets 409 state_changed."""
    values = {"state": state, "updated_at": utcnow(), **values}
    if not db.compare_and_set(*_move(snapshot, values)):
        raise _state_changed(snapshot, state)  # nothing written: neither the row nor the audit row's final status
    _record(snapshot, values)
    return snapshot


def _claim(connection: Connection, snapshot: Snapshot, state: SnapshotState) -> None:
    """set_state in the caller's transaction, for the first commit of an operation."""
    values = {"state": state, "updated_at": utcnow()}
    if connection.execute(*_move(snapshot, values)).rowcount != 1:
        raise _state_changed(snapshot, state)
    _record(snapshot, values)


def _move(snapshot: Snapshot, values: dict) -> tuple:
    """The compare-and-set UPDATE of a state change and its parameters: the row moves from the state the snapshot
    holds to `values`."""
    return _move_statement(tuple(values)), {"row_id": snapshot.id, "from_state": snapshot.state,
                                            **{f"new_{key}": value for key, value in values.items()}}


def _record(snapshot: Snapshot, values: dict) -> None:
    for key, value in values.items():
        set_committed_value(snapshot, key, value)


def _state_changed(snapshot: Snapshot, state: SnapshotState) -> Conflict:
    return Conflict(f"snapshot {snapshot.name!r} was changed by another request while it was "
                    f"{snapshot.state.value}, so it was not made {state.value}; read it again and retry if "
                    "still needed", code="state_changed",
                    details={"snapshot": snapshot.name, "expected_state": snapshot.state.value})


@cache
def _move_statement(keys: tuple[str, ...]):
    # Built once per set of columns: building an UPDATE and its cache key cost more Python than SQLite takes to
    # run it.
    table = Snapshot.__table__
    return update(table).where(table.c.id == bindparam("row_id"), table.c.state == bindparam("from_state")).values(
        {key: bindparam(f"new_{key}", type_=table.c[key].type) for key in keys})


def create(identity: Identity, kind: Kind, project: str, volume_name: str, name: str) -> Snapshot:
    identity.require_write(project)
    snapshot = _reserve(kind, project, volume_name, name)
    volume = snapshot.volume
    try:
        kind.create_snapshot(volumes.ceph_connection(volume), volume, name)
    except (RobinError, CephError) as exc:
        _undo_create(kind, snapshot, exc)
        raise
    crash_point("snapshot.create")
    audit.success_commits_next()
    return set_state(snapshot, SnapshotState.AVAILABLE)


def _reserve(kind: Kind, project: str, volume_name: str, name: str) -> Snapshot:
    """The snapshot's row in `creating`, counted against max_snapshots, in the transaction that locks the project
    and finds the volume available. A Core transaction (db.writing): an ORM session and its loaded objects cost
    more Python than its four statements (BENCHMARKS.md)."""
    try:
        with db.writing() as connection:
            project_row, volume, _ = _locked_volume(connection, kind, project, volume_name)
            volumes.require_available(kind, volume, "snapshotted")
            projects.reserve(connection, project_row, add_snapshots=1)
            now = utcnow()
            row = {"id": str(uuid.uuid4()), "project_id": project_row.id, kind.snapshot_fk: volume.id, "name": name,
                   "size_bytes": volume.size_bytes, "state": SnapshotState.CREATING, "created_at": now,
                   "updated_at": now}
            connection.execute(_INSERT, row)
    except IntegrityError as exc:
        raise Conflict(f"{kind.noun} {volume_name!r} already has a snapshot {name!r}", code="snapshot_exists",
                       details={"volume": volume_name, "snapshot": name}) from exc
    return _snapshot_of(kind, volume, row)


def _undo_create(kind: Kind, snapshot: Snapshot, cause: RobinError | CephError) -> None:
    if volumes.left_for_the_reconciler(cause):
        set_state(snapshot, SnapshotState.ERROR, error_message=f"create failed: {cause.message}")
        return
    try:
        kind.remove_snapshot(volumes.ceph_connection(snapshot.volume), snapshot.volume, snapshot.name)
    except (RobinError, CephError):
        set_state(snapshot, SnapshotState.ERROR, error_message=f"create failed: {cause.message}")
        return
    with db.writing() as connection:
        connection.execute(_DELETE, {"row_id": snapshot.id})


def snapshot_item(snapshot: Snapshot) -> dict:
    """A snapshot as SnapshotSchema writes it (a listing's items skip marshmallow's per-field walk)."""
    return {"id": snapshot.id, "name": snapshot.name, "volume": snapshot.volume.name,
            "size_bytes": snapshot.size_bytes, "state": snapshot.state.value,
            "created_at": snapshot.created_at.isoformat()}


def list_page(identity: Identity, kind: Kind, project: str, volume_name: str, limit: int,
              cursor: str | None) -> Page:
    identity.require_read(project)
    with db.reading() as session:
        volume = volumes.find(session, kind, project, volume_name)
        page = paginate(session, _live(kind, volume), Snapshot.name, limit, cursor)
        _attach(kind, volume, page.items)
        return page


def _across_volumes():
    """Snapshots of live volumes with what names their volume, as plain rows: one query, no volume loaded."""
    return (select(Snapshot.id, Snapshot.name, Snapshot.size_bytes, Snapshot.state, Snapshot.created_at,
                   Project.name.label("project"),
                   case((Snapshot.rbd_image_id.is_not(None), "rbd"), else_="cephfs").label("volume_kind"),
                   case((Snapshot.rbd_image_id.is_not(None), RbdImage.name), else_=CephfsPath.name).label("volume"))
            .join(Project, Project.id == Snapshot.project_id)
            .outerjoin(RbdImage, RbdImage.id == Snapshot.rbd_image_id)
            .outerjoin(CephfsPath, CephfsPath.id == Snapshot.cephfs_path_id)
            .where(Snapshot.state != SnapshotState.DELETED,
                   or_(RbdImage.state != VolumeState.DELETED, CephfsPath.state != VolumeState.DELETED)))


def list_across(identity: Identity, args: dict) -> Page:
    """Snapshots of every volume of the projects the token sees (members: their project), or of one `project`;
    only those of the given `names` and `state` when asked. Ordered by id, so a page costs one query on the
    primary key (or the project's index) at any depth, and pages stay stable while snapshots come and go."""
    query = _across_volumes()
    project = args.get("project") or volumes.only_project(identity, "snapshots")
    if project is not None:
        identity.require_read(project)
    if args.get("name"):
        query = query.where(Snapshot.name.in_(args["name"]))
    if args.get("state"):
        query = query.where(Snapshot.state == SnapshotState(args["state"]))
    if args.get("cursor"):
        query = query.where(Snapshot.id > decode_cursor(args["cursor"]))
    limit = args["limit"]
    with db.reading() as session:
        if project is not None:
            query = query.where(Snapshot.project_id == projects.find(session, project).id)
        rows = [dict(row._mapping) for row in session.execute(query.order_by(Snapshot.id).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:  # as SnapshotListingSchema writes them
        row["state"] = SnapshotState(row["state"]).value
        row["created_at"] = row["created_at"].isoformat()
    return Page(items=rows, next_cursor=encode_cursor(rows[-1]["id"]) if more else None)


def get(identity: Identity, kind: Kind, project: str, volume_name: str, name: str) -> Snapshot:
    identity.require_read(project)
    with db.reading() as session:
        return _find(session, kind, volumes.find(session, kind, project, volume_name), name)


def delete(identity: Identity, kind: Kind, project: str, volume_name: str, name: str) -> None:
    identity.require_write(project)
    with db.writing() as connection:
        # The project's lock: after a rollback's start, which reads this snapshot, or before it.
        _, volume, snapshot = _locked_volume(connection, kind, project, volume_name, name)
        if snapshot is None:
            raise _snapshot_not_found(kind, volume_name, name)
        _refuse_while_rolling_back_to(volume, snapshot)
        previous = snapshot.state
        _claim(connection, snapshot, SnapshotState.DELETING)
    remove(kind, snapshot, previous)


def _refuse_while_rolling_back_to(volume: Volume, snapshot: Snapshot) -> None:
    # A rollback cut short is repaired only by rolling back to the same snapshot again.
    if volume.state is VolumeState.ROLLING_BACK and getattr(volume, "rollback_snapshot", None) == snapshot.name:
        raise Conflict(f"snapshot {snapshot.name!r} is what {volume.name!r} is being rolled back to; delete it "
                       "once the rollback has finished", code="snapshot_busy",
                       details={"snapshot": snapshot.name, "volume": volume.name})


def remove(kind: Kind, snapshot: Snapshot, previous: SnapshotState) -> None:
    """Remove a snapshot whose row is already `deleting`; on failure put the row back, unless Ceph did not answer:
    the snapshot may be gone, and the reconciler finishes removing it."""
    try:
        kind.remove_snapshot(volumes.ceph_connection(snapshot.volume), snapshot.volume, snapshot.name)
    except (RobinError, CephError) as exc:
        if not volumes.left_for_the_reconciler(exc):
            set_state(snapshot, previous)
        raise
    crash_point("snapshot.delete")
    audit.success_commits_next()
    set_state(snapshot, SnapshotState.DELETED, deleted_at=utcnow())


def rollback(identity: Identity, kind: Kind, project: str, image_name: str, name: str) -> Snapshot:
    """Roll an RBD image back to a snapshot; refused while anything has the image open or locked,
    since rewriting blocks under a mounted file system corrupts it. The image takes the snapshot's
    size again, with the quota for the larger size reserved meanwhile. The row is `rolling_back`
    with the snapshot recorded until the end: a rollback cut short leaves blocks of both, which only
    rolling back again repairs (the reconciler does), never a resize. A CephFS path is refused first."""
    if kind is not RBD:
        # Nor does Ceph roll subvolumes back: a subvolume's snapshot is only read, or cloned.
        raise BadRequest("robin does not roll CephFS paths back in place: copy what you need from the read-only "
                         f"directory .snap/{name} inside the path (in a subvolume: .snap/_{name}_<number>)",
                         code="rollback_not_supported")
    identity.require_write(project)
    image, snapshot = _begin_rollback(project, image_name, name)
    conn = volumes.ceph_connection(image)
    try:
        users = rbd_ops.users(conn, image.pool, image.name)
    except CephError:
        _cancel_rollback(image)
        raise
    if users:
        _cancel_rollback(image)
        raise Conflict(f"RBD image {image_name!r} is in use ({'; '.join(users)}); unmap or stop what uses it, "
                       "then roll back", code="volume_in_use", details={"users": users})
    crash_point("snapshot.rollback_started")
    # A failure from here on may have rewritten part of the image: the row stays rolling_back, for
    # the reconciler to roll back again.
    rbd_ops.rollback(conn, image.pool, image.name, name)
    crash_point("snapshot.rollback")
    audit.success_commits_next()
    finish_rollback(image)
    return snapshot


def _cancel_rollback(image: RbdImage) -> None:
    volumes.set_state(image, VolumeState.AVAILABLE, target_size_bytes=None, rollback_snapshot=None)


def finish_rollback(image: RbdImage) -> None:
    """Record a completed rollback: librbd gave the image the snapshot's size."""
    volumes.set_state(image, VolumeState.AVAILABLE, size_bytes=image.target_size_bytes, target_size_bytes=None,
                      rollback_snapshot=None)


def _begin_rollback(project: str, image_name: str, name: str) -> tuple[RbdImage, Snapshot]:
    with db.writing() as connection:
        project_row, image, snapshot = _locked_volume(connection, RBD, project, image_name, name)
        if snapshot is None:
            raise _snapshot_not_found(RBD, image_name, name)
        volumes.require_available(RBD, image, "rolled back")
        _require_available_snapshot(snapshot, "rolled back to")
        if snapshot.size_bytes > image.size_bytes:
            projects.reserve(connection, project_row, add_bytes=snapshot.size_bytes - image.size_bytes)
        volumes.claim(connection, image, VolumeState.ROLLING_BACK, target_size_bytes=snapshot.size_bytes,
                      rollback_snapshot=name)
        return image, snapshot


def _require_available_snapshot(snapshot: Snapshot, verb: str) -> None:
    # One still being created may not exist in Ceph yet; one being deleted, or in error, may be gone any moment.
    if snapshot.state is not SnapshotState.AVAILABLE:
        raise Conflict(f"snapshot {snapshot.name!r} is {snapshot.state.value}; only an available one can be {verb}",
                       code="snapshot_busy", details={"state": snapshot.state.value})


# --- clones -------------------------------------------------------------------------------------

TEMPORARY_SNAPSHOT_PREFIX = RESERVED_PREFIX


def clone(identity: Identity, project: str, spec: dict) -> RbdImage:
    """A copy-on-write clone of a snapshot, or of an image's current state through a temporary
    snapshot (removed at once: with clone format 2 Ceph keeps it, hidden, while clones need it).
    The clone counts against the quota at its full size."""
    identity.require_write(project)
    child, parent, source_size = _reserve_clone(project, spec)
    conn = volumes.ceph_connection(child)
    temporary = child.parent_snapshot.startswith(TEMPORARY_SNAPSHOT_PREFIX)
    try:
        if temporary:
            rbd_ops.create_snapshot(conn, parent.pool, parent.name, child.parent_snapshot)
        rbd_ops.clone(conn, parent.pool, parent.name, child.parent_snapshot, child.name, child.features,
                      owner=child.id, metadata=child.image_metadata)
        if child.size_bytes != source_size:
            rbd_ops.resize_image(conn, child.pool, child.name, child.size_bytes)
        if temporary:
            rbd_ops.remove_snapshot(conn, parent.pool, parent.name, child.parent_snapshot)
    except CephError as exc:
        volumes.undo_create(RBD, child, exc)
        if temporary and not volumes.left_for_the_reconciler(exc):
            _forget_temporary_snapshot(conn, parent, child.parent_snapshot)
        raise
    crash_point("volume.clone")
    audit.success_commits_next()
    return volumes.set_state(child, VolumeState.AVAILABLE)


def _reserve_clone(project: str, spec: dict) -> tuple[RbdImage, RbdImage, int]:
    """The clone's row in `creating` with its quota reserved, in the transaction that locks the project and finds
    its parent (and the parent's snapshot) available: a Core transaction, as a snapshot's (_reserve)."""
    source = spec["source"]
    try:
        with db.writing() as connection:
            project_row, parent, snapshot = _locked_volume(connection, RBD, project, source["image"],
                                                           source.get("snapshot"))
            volumes.require_available(RBD, parent, "cloned")
            if "snapshot" in source and snapshot is None:
                raise _snapshot_not_found(RBD, parent.name, source["snapshot"])
            if snapshot is not None:
                _require_available_snapshot(snapshot, "cloned")
            _require_parents_placement(spec, parent)
            source_size = snapshot.size_bytes if snapshot else parent.size_bytes
            size = spec.get("size_bytes", source_size)
            if size < source_size:
                raise InvalidInput(f"a clone cannot be smaller than its source ({source_size} bytes)",
                                   details={"fields": {"size_bytes": [f"must be at least {source_size}"]}})
            child_id = str(uuid.uuid4())
            placement = {**RBD.placement(spec, project), "pool": parent.pool, "id": child_id,
                         "parent_id": parent.id,
                         "parent_snapshot": snapshot.name if snapshot else TEMPORARY_SNAPSHOT_PREFIX + child_id}
            child = volumes.insert_new(connection, RBD, project_row, parent.cluster, {**spec, "size_bytes": size},
                                       placement)
    except IntegrityError as exc:
        raise volumes.name_taken(RBD, spec["name"], parent.cluster.name) from exc
    child.parent_name = parent.name
    return child, parent, source_size


def _require_parents_placement(spec: dict, parent: RbdImage) -> None:
    """A clone shares its parent's objects, so it lives on the parent's cluster and pool. Placing it
    elsewhere is refused, not quietly corrected: the parent is robin's row in the caller's project, and
    its name on another cluster may be another project's image."""
    placement = {"cluster": parent.cluster.name, "pool": parent.pool}
    elsewhere = {field: [f"must be {value!r}, the parent's, or left out"] for field, value in placement.items()
                 if spec.get(field, value) != value}
    if elsewhere:
        raise InvalidInput(f"a clone lives on its parent's cluster {placement['cluster']!r} and pool "
                           f"{placement['pool']!r}; leave out \"cluster\" and \"pool\" or give those",
                           code="clone_placement", details={"fields": elsewhere, "parent": placement})


def _forget_temporary_snapshot(conn, parent: RbdImage, snapshot: str) -> None:
    try:
        rbd_ops.remove_snapshot(conn, parent.pool, parent.name, snapshot)
    except CephError:
        log.warning("temporary clone snapshot left for the reconciler", extra={"image": parent.id,
                                                                              "snapshot": snapshot})


def flatten(identity: Identity, project: str, name: str) -> RbdImage:
    """Copy the parent's blocks into the clone so it no longer depends on it. Idempotent. The row is
    `flattening` meanwhile, so a delete waits for the end instead of being undone by it; a crash
    leaves it so, for the reconciler to flatten again."""
    identity.require_write(project)
    with db.unit_of_work() as session:
        image = volumes.find(session, RBD, project, name)
        volumes.require_available(RBD, image, "flattened")
        if image.parent_id is None:
            return image
        volumes.claim(session, image, VolumeState.FLATTENING)
    try:
        rbd_ops.flatten(volumes.ceph_connection(image), image.pool, image.name)
    except (RobinError, CephError) as exc:
        # Unanswered, librbd may still be copying: the row stays `flattening` for the reconciler to finish.
        if not volumes.left_for_the_reconciler(exc):
            volumes.set_state(image, VolumeState.AVAILABLE)
        raise
    crash_point("volume.flatten")
    finish_flatten(image)
    return image


def finish_flatten(image: RbdImage) -> None:
    volumes.set_state(image, VolumeState.AVAILABLE, parent_id=None, parent_snapshot=None)
    image.parent_name = None  # the loaded column; the row has no parent any more
