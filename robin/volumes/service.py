"""Volume lifecycle (RBD images and CephFS paths): a database state machine around idempotent
Ceph calls.

Each mutation is: a transaction that validates, reserves quota and moves the row into a
transitional state -> the Ceph call -> a transaction that records the result. A failure in the
middle undoes what was done and re-raises the original error. A crash in the middle leaves a row
in `creating`, `resizing` or `deleting` for the reconciler:
  creating: the volume may or may not exist (marked with the row id when it does) -> finish or drop;
            a restore's row (it keeps its trash_ref) -> finish the restore, or back to the trash;
  resizing: Ceph's size (quota) is the old or the target one -> record what Ceph has;
  deleting: the volume may still exist -> remove it (idempotent) and mark the row deleted.
A purge claims a trashed row by setting purged_at and clears trash_ref when done: a row with both
was being purged -> purge it from the trash again.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from robin import config
from robin.audit import service as audit
from robin.audit import usage
from robin.auth.identity import Identity
from robin.auth.models import Role
from robin.ceph import CephAlreadyExists, CephError, CephNotConnected, CephUnavailable
from robin.ceph.errors import CephPermissionDenied
from robin.clusters import service as clusters
from robin.clusters.models import CephCluster
from robin.db import db, utcnow
from robin.errors import BadRequest, Conflict, Forbidden, NotFound, RobinError
from robin.faults import crash_point
from robin.gateway.models import GatewayAccount
from robin.pagination import Page
from robin.projects import service as projects
from robin.projects.models import Project
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes import listing
from robin.volumes.kinds import KINDS, Kind, kind_of
from robin.volumes.models import CephfsPath, RbdImage, Volume, VolumeState

log = logging.getLogger(__name__)


def find(session: Session, kind: Kind, project: str, name: str) -> Volume:
    """The project's live volume of that name, with its project and cluster, in one query; the project alone
    is looked up only when no volume is found, to tell which of the two does not exist."""
    volume = session.scalar(_find_query(kind.model), {"project": project, "name": name})
    if volume is None:
        projects.find(session, project)
        raise volume_not_found(kind, project, name)
    return volume


def volume_not_found(kind: Kind, project: str, name: str) -> NotFound:
    return NotFound(f"{kind.noun} {name!r} does not exist in project {project!r}", code="volume_not_found",
                    details={"project": project, "name": name})


@cache
def _find_query(model: type[Volume]):
    # Built once per kind: building a statement costs more Python than the database takes to run it.
    return (select(model).join(model.project).options(contains_eager(model.project))
            .where(Project.name == bindparam("project"), model.name == bindparam("name"),
                   model.state != VolumeState.DELETED))


def name_taken(kind: Kind, name: str, cluster: str) -> Conflict:
    return Conflict(f"a {kind.noun} named {name!r} already exists in cluster {cluster!r} (names are unique "
                    "per pool or file system, across projects)", code="name_taken",
                    details={"name": name, "cluster": cluster})


def set_state(volume: Volume, state: VolumeState, **values) -> Volume:
    """Record an outcome on the row and on the caller's (detached) copy: a compare-and-set on the
    state the copy holds, so a row another request moved meanwhile (deleted, restored, purged) is
    never overwritten; that lost race is a StateChanged. A plain UPDATE by primary key otherwise:
    the copy already holds everything else, so nothing is loaded again."""
    values = {"state": state, "updated_at": utcnow(), **values}
    if not db.compare_and_set(*_move(volume, values)):
        raise _state_changed(volume, state)  # nothing written: neither the row nor the audit row's final status
    for key, value in values.items():
        setattr(volume, key, value)
    return volume


def claim(executor: Session | Connection, volume: Volume, state: VolumeState, *conditions, **values) -> None:
    """set_state inside the caller's transaction (a session's or a Core connection's), for the first commit of an
    operation: the row moves only from the state the transaction read (and while `conditions` hold), whatever a
    concurrent request did since."""
    values = {"state": state, "updated_at": utcnow(), **values}
    if conditions:
        table = type(volume).__table__
        moved = executor.execute(update(table).where(table.c.id == volume.id, table.c.state == volume.state,
                                                     *conditions)
                                 .values(**_columns(volume, values)).execution_options(synchronize_session=False))
    else:
        connection = executor.connection() if isinstance(executor, Session) else executor
        moved = connection.execute(*_move(volume, values))
    if moved.rowcount != 1:
        raise _state_changed(volume, state)
    for key, value in values.items():
        set_committed_value(volume, key, value)  # written already: nothing for the session to flush


def _columns(volume: Volume, values: dict) -> dict:
    # Attribute names to column names: a CephFS path's size_bytes is its quota_bytes column.
    return {type(volume).__mapper__.attrs[key].columns[0].name: value for key, value in values.items()}


def _move(volume: Volume, values: dict) -> tuple:
    """The compare-and-set UPDATE of a state change and its parameters: the row moves from the state the copy
    holds to `values` (attribute names)."""
    statement = _move_statement(type(volume), tuple(values))
    return statement, {"row_id": volume.id, "from_state": volume.state,
                       **{f"new_{key}": value for key, value in values.items()}}


@cache
def _move_statement(model: type[Volume], keys: tuple[str, ...]):
    # Built once per model and set of columns: building an UPDATE costs more Python than SQLite takes to run it.
    table = model.__table__
    columns = {key: model.__mapper__.attrs[key].columns[0] for key in keys}
    return update(table).where(table.c.id == bindparam("row_id"), table.c.state == bindparam("from_state")).values(
        {column.name: bindparam(f"new_{key}", type_=column.type) for key, column in columns.items()})


def _state_changed(volume: Volume, state: VolumeState) -> Conflict:
    noun = kind_of(volume).noun
    return Conflict(f"{noun} {volume.name!r} was changed by another request while it was {volume.state.value}, "
                    f"so it was not made {state.value}; read it again and retry if still needed",
                    code="state_changed", details={"name": volume.name, "expected_state": volume.state.value})


def ceph_connection(volume: Volume):
    return clusters.connection(volume.cluster)


# --- create -----------------------------------------------------------------------------------

def create(identity: Identity, kind: Kind, project: str, spec: dict) -> Volume:
    identity.require_write(project)
    volume = reserve_new(kind, project, spec, kind.placement(spec, project))
    try:
        made = kind.create(ceph_connection(volume), volume)
    except (RobinError, CephError) as exc:
        undo_create(kind, volume, exc)
        if isinstance(exc, CephAlreadyExists):
            raise name_taken(kind, volume.name, volume.cluster.name) from exc
        raise
    crash_point("volume.create")
    audit.success_commits_next()
    return set_state(volume, VolumeState.AVAILABLE, **made)


def reserve_new(kind: Kind, project: str, spec: dict, placement: dict) -> Volume:
    """Insert the row in `creating`, its quota reserved in the same transaction (insert_new). A Core transaction
    (db.writing): its three statements need no ORM session, which cost more Python than they do (BENCHMARKS.md)."""
    cluster_name = spec.get("cluster")
    try:
        with db.writing() as connection:
            row = connection.execute(_lock_with_cluster(cluster_name is not None),
                                     {"name": project, "cluster": cluster_name}).first()
            project_row = projects.locked(row, project)
            if row.ceph_cluster_id is None:
                raise clusters.unresolved(cluster_name)
            return insert_new(connection, kind, project_row, _detached_cluster(row), spec, placement)
    except IntegrityError as exc:
        # The unique indexes on live rows are the name check, races included.
        raise name_taken(kind, spec["name"], spec.get("cluster") or clusters.DEFAULT_NAME) from exc


_CLUSTER_COLUMNS = tuple(CephCluster.__table__.c)
# The labels of a cluster's columns beside a project's or a volume's (whose own cluster_id would clash with "cluster_").
_CLUSTER_PREFIX = "ceph_cluster_"
_CLUSTER_LABELLED = tuple(column.label(f"{_CLUSTER_PREFIX}{column.key}") for column in _CLUSTER_COLUMNS)


@cache
def _lock_with_cluster(by_name: bool):
    """projects.lock_quota's statement with the columns of the cluster a create names (by_name), or of the default
    one, beside the project's (labelled ceph_cluster_<column>): one round trip for both. The cluster is
    outer-joined: its columns are None when there is no such cluster."""
    chosen = CephCluster.name == bindparam("cluster") if by_name else CephCluster.is_default.is_(True)
    return projects.LOCK_QUOTA_QUERY.add_columns(*_CLUSTER_LABELLED).outerjoin(CephCluster, chosen)


def _detached_cluster(row) -> CephCluster:
    """The cluster of a _lock_with_cluster (or _locked_volume_query) row as a CephCluster detached as a loaded one
    would be: the volume's cluster, for its connection and its answer."""
    cluster = CephCluster(**{column.key: getattr(row, f"{_CLUSTER_PREFIX}{column.key}")
                             for column in _CLUSTER_COLUMNS})
    make_transient_to_detached(cluster)
    return cluster


def _owner(project_row: projects.Locked) -> Project:
    """A volume's project for its answer (which names it): made of the locked row's values, not loaded, and
    detached as a loaded one would be, so that no session could ever take it for a new project to insert."""
    owner = Project(id=project_row.id, name=project_row.name)
    make_transient_to_detached(owner)
    return owner


def find_locked(connection: Connection, kind: Kind, project_row: projects.Locked, name: str) -> Volume:
    """find() on a Core connection, in a transaction that holds the project locked (projects.lock_quota): the
    project's live volume of that name with its cluster, in one statement, built as a detached object (as a
    loaded one would be) from the row; no ORM session, whose loading cost more Python than the statement."""
    return find_locked_with_snapshot(connection, kind, project_row, name, None)[0]


def find_locked_with_snapshot(connection: Connection, kind: Kind, project_row: projects.Locked, name: str,
                              snapshot: str | None) -> tuple[Volume, dict | None]:
    """find_locked(), and in the same statement (when `snapshot` is given) the column values of the volume's live
    snapshot of that name: None when it has none."""
    with_snapshot = snapshot is not None
    row = connection.execute(_locked_volume_query(kind, with_snapshot),
                             {"project_id": project_row.id, "name": name, "snapshot": snapshot}).first()
    if row is None:
        raise volume_not_found(kind, project_row.name, name)
    volume = kind.model(**{key: getattr(row, key) for key in _volume_keys(kind.model)},
                        project=_owner(project_row), cluster=_detached_cluster(row))
    make_transient_to_detached(volume)
    if not with_snapshot or getattr(row, f"{_SNAPSHOT_PREFIX}id") is None:
        return volume, None
    return volume, {key: getattr(row, f"{_SNAPSHOT_PREFIX}{key}") for key in _SNAPSHOT_KEYS}


@cache
def _volume_keys(model: type[Volume]) -> tuple[str, ...]:
    # Every column attribute: an image's parent_name (a correlated subquery) too.
    return tuple(attr.key for attr in model.__mapper__.column_attrs)


# A snapshot's own columns beside its volume's, labelled snapshot_<column>.
_SNAPSHOT_PREFIX = "snapshot_"
_SNAPSHOT_KEYS = tuple(attr.key for attr in Snapshot.__mapper__.column_attrs
                       if attr.columns[0].table is Snapshot.__table__)


@cache
def _locked_volume_query(kind: Kind, with_snapshot: bool):
    # Built once per kind, as the write paths' statements are. The snapshot is outer-joined: its columns are None
    # when the volume has no live snapshot of the name.
    model = kind.model
    query = (select(*(getattr(model, key).label(key) for key in _volume_keys(model)), *_CLUSTER_LABELLED)
             .join(CephCluster, CephCluster.id == model.cluster_id))
    if with_snapshot:
        query = query.add_columns(*(getattr(Snapshot, key).label(f"{_SNAPSHOT_PREFIX}{key}")
                                    for key in _SNAPSHOT_KEYS)).outerjoin(
            Snapshot, (getattr(Snapshot, kind.snapshot_fk) == model.id) & (Snapshot.name == bindparam("snapshot"))
            & (Snapshot.state != SnapshotState.DELETED))
    return query.where(model.project_id == bindparam("project_id"), model.name == bindparam("name"),
                       model.state != VolumeState.DELETED)


def insert_new(executor: Session | Connection, kind: Kind, project_row: projects.Locked, cluster: CephCluster,
               spec: dict, placement: dict) -> Volume:
    """In the caller's transaction (a session's or a Core connection's), the project locked
    (projects.lock_quota): reserve the quota, insert the row in `creating` and read what the kind's create needs of
    the database (Kind.reserved); an IntegrityError when the name is taken. The row goes in as a Core insert of the
    object's columns (half the cost of an ORM flush); the object stays detached and is what the caller returns."""
    projects.reserve(executor, project_row, add_bytes=spec["size_bytes"], add_volumes=1)
    now = utcnow()
    volume = kind.model(**{"id": str(uuid.uuid4()), **placement}, project=_owner(project_row), cluster=cluster,
                        project_id=project_row.id, cluster_id=cluster.id, name=spec["name"],
                        size_bytes=spec["size_bytes"], created_for=spec.get("created_for"),
                        state=VolumeState.CREATING, created_at=now, updated_at=now)
    # On a connection: through a session, an INSERT takes the ORM's bulk path, more Python again.
    connection = executor.connection() if isinstance(executor, Session) else executor
    connection.execute(_insert_statement(kind.model), _column_values(volume))
    kind.reserved(connection, volume)
    return volume


@cache
def _insert_statement(model: type[Volume]):
    # Built once per kind: a new INSERT per request computed its cache key again each time (SQLAlchemy keeps a
    # statement's key on the statement).
    return insert(model.__table__)


def _column_values(volume: Volume) -> dict:
    table = type(volume).__table__
    values = {}
    for attr in type(volume).__mapper__.column_attrs:
        column = attr.columns[0]
        if column.table is table and attr.key in volume.__dict__:
            values[column.name] = volume.__dict__[attr.key]
    return values


def undo_create(kind: Kind, volume: Volume, cause: RobinError | CephError) -> None:
    """Remove what a failed create left, then the row, releasing its quota. When the volume's
    fate cannot be known (Ceph stopped answering mid-way), keep the row in `error` holding its
    quota, so the reconciler can decide without ever exceeding the quota. A foreign object with
    the name (CephAlreadyExists) is never touched."""
    if left_for_the_reconciler(cause):
        set_state(volume, VolumeState.ERROR, error_message=f"create failed: {cause.message}")
        return
    if not isinstance(cause, (CephAlreadyExists, CephNotConnected)):
        try:
            kind.remove(ceph_connection(volume), volume)
        except (RobinError, CephError) as undo_error:
            # Refused both ways. Either robin's user may not touch the pool or directory at all, and it made nothing
            # there; or only robin's mark was refused, and the undo removed the volume before its own refusal at
            # the mark (Ceph's caps that let a user make an image or a directory let it remove one too: tests/
            # integration/test_least_privilege.py). Nothing is left, a reconciler would be refused too: the row
            # and its quota go.
            if not (isinstance(cause, CephPermissionDenied) and isinstance(undo_error, CephPermissionDenied)):
                log.error("could not undo a failed create", extra={"volume": volume.id, "error": undo_error.message})
                set_state(volume, VolumeState.ERROR, error_message=f"create failed: {cause.message}")
                return
    with db.unit_of_work() as session:
        session.execute(kind.model.__table__.delete().where(kind.model.id == volume.id))


def left_for_the_reconciler(cause: RobinError | CephError) -> bool:
    """Ceph did not answer in time (it was reached: no connection failure), so what the call did is unknown: the row
    keeps the state that says so (a create's `error`, an operation's own transitional state) for the reconciler,
    which looks at Ceph and finishes. An undo now would guess, and most likely wait out a second timeout."""
    return isinstance(cause, CephUnavailable) and not isinstance(cause, CephNotConnected)


# --- read -------------------------------------------------------------------------------------

def get(identity: Identity, kind: Kind, project: str, name: str, *, with_used: bool = False) -> Volume:
    identity.require_read(project)
    with db.reading() as session:
        volume = find(session, kind, project, name)
    if with_used:
        volume.used_bytes = used_bytes(volume)  # transient: only the response carries it
    return volume


def get_item(identity: Identity, kind: Kind, project: str, name: str) -> dict:
    """The project's live volume of that name in its wire form, as its listing writes it: one statement."""
    identity.require_read(project)
    with db.read_connection() as connection:
        item = listing.volume_item(connection, kind.model, project, name)
    if item is None:
        with db.reading() as session:
            projects.find(session, project)  # which of the two does not exist
        raise volume_not_found(kind, project, name)
    return item


def list_page(identity: Identity, kind: Kind, project: str, limit: int, cursor: str | None,
              trashed: bool = False) -> Page:
    """Live volumes, or (trashed) those in the trash waiting for their purge time; items in their wire form."""
    identity.require_read(project)
    with db.read_connection() as connection:
        page = listing.project_page(connection, kind.model, project, limit, cursor, trashed)
    if not page.items:
        with db.reading() as session:
            projects.find(session, project)  # a project with none of them, or no such project (404)
    return page


def list_across(identity: Identity, project: str | None, limit: int, cursor: str | None) -> Page:
    """Live volumes of both kinds in every project the token sees (a member's: its own), or in `project`."""
    project = project or only_project(identity, "volumes")
    if project is not None:
        identity.require_read(project)
    with db.read_connection() as connection:
        page = listing.across_page(connection, project, limit, cursor)
    if project is not None and not page.items:
        with db.reading() as session:
            projects.find(session, project)  # a project with no volume, or no such project (404)
    return page


def only_project(identity: Identity, what: str) -> str | None:
    """The one project a token that does not see them all may list (None: all of them)."""
    if identity.sees_all_projects:
        return None
    if identity.project is None:
        raise Forbidden(f"this token belongs to no project: it sees no {what}", details={"role": identity.role.value})
    return identity.project


def used_bytes(volume: Volume) -> int:
    return kind_of(volume).used_bytes(ceph_connection(volume), volume)


def project_usage(identity: Identity, project: str, *, refresh: bool = False) -> dict:
    """Quota and provisioned bytes from the rows (always current); used bytes from the usage table the
    maintenance loop keeps, with the time of its oldest figure: no Ceph call. `refresh` (admins only:
    it costs a Ceph round trip per volume) measures the project's volumes first."""
    identity.require_read(project)
    refreshed = _refresh_usage(identity, project) if refresh else None
    with db.reading() as session:
        project_row = projects.find(session, project)
        provisioned = projects.provisioned(session, project_row.id)
        cached = usage.project_cached(session, project_row.id)
    quota, measured_at = project_row.quota, cached.oldest_measured_at
    return {
        "project": project,
        "quota": quota,
        "provisioned_bytes": provisioned.bytes,
        "used_bytes": cached.used_bytes,
        "measured_at": measured_at,
        "age_seconds": round((utcnow() - measured_at).total_seconds(), 1) if measured_at else None,
        "unmeasured_volumes": cached.unmeasured_volumes,
        "refresh": refreshed,
        "volumes": provisioned.volumes,
        "remaining_bytes": max(0, quota.max_bytes - provisioned.bytes),
        "remaining_volumes": max(0, quota.max_volumes - provisioned.volumes),
    }


def _refresh_usage(identity: Identity, project: str) -> dict:
    if identity.role is not Role.ADMIN:
        raise Forbidden("measuring a project's usage now costs a Ceph call per volume: ?refresh=true needs an admin "
                        "token; without it the answer is the last measurement (see measured_at)",
                        details={"role": identity.role.value})
    with db.reading() as session:
        project_id = projects.find(session, project).id
    result = usage.refresh(project_id=project_id)
    return {"measured": result.measured, "failed": result.failed, "seconds": round(result.seconds, 3)}


# --- resize -----------------------------------------------------------------------------------

def resize(identity: Identity, kind: Kind, project: str, name: str, size_bytes: int,
           allow_shrink: bool = False) -> Volume:
    identity.require_write(project)
    volume, changed = _begin_resize(kind, project, name, size_bytes, allow_shrink)
    if not changed:
        return volume
    try:
        kind.resize(ceph_connection(volume), volume, size_bytes)
    except (RobinError, CephError) as exc:
        # Unanswered, the resize may have happened: the row stays `resizing`, its target's quota held, and the
        # reconciler resizes again (idempotent). Put back, the row would hold less quota than the image has.
        if not left_for_the_reconciler(exc):
            set_state(volume, VolumeState.AVAILABLE, target_size_bytes=None)
        raise
    crash_point("volume.resize")
    audit.success_commits_next()
    return set_state(volume, VolumeState.AVAILABLE, size_bytes=size_bytes, target_size_bytes=None)


def _begin_resize(kind: Kind, project: str, name: str, size_bytes: int, allow_shrink: bool) -> tuple[Volume, bool]:
    """The resize's first commit: a Core transaction (db.writing) as the create's reservation is, with the same
    lock, statements and audit row as an ORM session's; a resize costs a fifth less CPU so (BENCHMARKS.md)."""
    with db.writing() as connection:
        project_row = projects.lock_quota(connection, project)
        volume = find_locked(connection, kind, project_row, name)
        require_available(kind, volume, "resized")
        if size_bytes == volume.size_bytes:
            return volume, False
        if size_bytes < volume.size_bytes and kind.shrink_destroys_data and not allow_shrink:
            raise BadRequest(f"{size_bytes} bytes is smaller than the {kind.noun}'s {volume.size_bytes}; shrinking "
                             "destroys data at its end, so it needs \"allow_shrink\": true",
                             code="shrink_not_allowed",
                             details={"size_bytes": volume.size_bytes, "requested_size_bytes": size_bytes})
        if size_bytes > volume.size_bytes:
            projects.reserve(connection, project_row, add_bytes=size_bytes - volume.size_bytes)
        claim(connection, volume, VolumeState.RESIZING, target_size_bytes=size_bytes)
        return volume, True


def require_available(kind: Kind, volume: Volume, verb: str) -> None:
    if volume.state is not VolumeState.AVAILABLE:
        raise Conflict(f"{kind.noun} {volume.name!r} is {volume.state.value} and cannot be {verb} now; retry later",
                       code="volume_busy", details={"state": volume.state.value})


# --- delete -----------------------------------------------------------------------------------

def delete(identity: Identity, kind: Kind, project: str, name: str, *, with_snapshots: bool = False,
           purge: bool = False) -> None:
    """Move the volume to the trash, restorable until its purge time, or (admins, ?purge=true)
    remove it at once. Either way its quota is released now."""
    identity.require_write(project)
    if purge:
        identity.require_admin()
    with db.unit_of_work() as session:
        # The project's lock, as a clone's reservation takes it: without it, on PostgreSQL a clone could commit
        # between the check for dependents below and the claim, leaving a live clone of a parent in the trash.
        projects.lock_quota(session, project)
        volume = find(session, kind, project, name)
        # A clone the mgr is still copying is canceled: there is nothing in it to keep in the trash.
        cloning = isinstance(volume, CephfsPath) and volume.clone_of is not None
        if volume.state is not VolumeState.ERROR and not (cloning and volume.state is VolumeState.CREATING):
            require_available(kind, volume, "deleted")
        _refuse_dependents(session, kind, volume)
        snapshots = _snapshots_to_delete(session, kind, volume, with_snapshots)
        previous = volume.state
        claim(session, volume, VolumeState.DELETING)
    conn = ceph_connection(volume)
    try:
        for snapshot in snapshots:
            kind.remove_snapshot(conn, volume, snapshot.name)
            _mark_snapshot_deleted(snapshot)
        trash_ref = None if purge or cloning else kind.trash(conn, volume, config.current().trash_delay)
        if trash_ref is None:
            kind.remove(conn, volume)
    except (RobinError, CephError) as exc:
        # Unanswered, the removal or the move may have happened, or be under way (librbd goes on removing objects
        # after robin stops waiting): the row and its snapshots stay `deleting`, for the reconciler to finish into
        # the trash. Put back, an `available` row would promise data that may be gone.
        if not left_for_the_reconciler(exc):
            set_state(volume, previous)
            _revert_snapshots(snapshot for snapshot in snapshots if snapshot.state is SnapshotState.DELETING)
        raise
    crash_point("volume.delete")
    audit.success_commits_next()
    now = utcnow()
    if trash_ref is None:
        set_state(volume, VolumeState.DELETED, deleted_at=now, purged_at=now)
    else:
        purge_after = now + timedelta(seconds=config.current().trash_delay)
        set_state(volume, VolumeState.DELETED, deleted_at=now, purge_after=purge_after, trash_ref=trash_ref)


# --- trash --------------------------------------------------------------------------------------

def restore(identity: Identity, kind: Kind, project: str, name: str) -> Volume:
    """Bring a volume back from the trash before its purge time; its quota is reserved again."""
    identity.require_write(project)
    volume = _begin_restore(kind, project, name)
    try:
        kind.restore(ceph_connection(volume), volume)
    except (RobinError, CephError) as exc:
        # Unanswered, the volume may be back: the row stays `creating` with its place in the trash, which the
        # reconciler settles either way (_converge_restore). Put back in the trash, a restored image would be
        # nobody's, never purged.
        if not left_for_the_reconciler(exc):
            set_state(volume, VolumeState.DELETED)
        raise
    crash_point("volume.restore")
    audit.success_commits_next()
    return set_state(volume, VolumeState.AVAILABLE, deleted_at=None, purge_after=None, trash_ref=None)


def _begin_restore(kind: Kind, project: str, name: str) -> Volume:
    model = kind.model
    try:
        with db.unit_of_work() as session:
            project_row = projects.lock_quota(session, project)
            volume = session.scalars(select(model).where(
                model.project_id == project_row.id, model.name == name, listing.in_trash(model))
                .order_by(model.deleted_at.desc())).first()
            if volume is None or volume.purge_after <= utcnow():
                raise NotFound(f"no {kind.noun} {name!r} can be restored in project {project!r}: it is not in "
                               "the trash, or its purge time has passed", code="not_in_trash",
                               details={"project": project, "name": name})
            projects.reserve(session, project_row, add_bytes=volume.size_bytes, add_volumes=1)
            # Live again: the unique indexes check the name. Not once a purge has claimed it.
            claim(session, volume, VolumeState.CREATING, model.purged_at.is_(None))
            return volume
    except IntegrityError as exc:
        raise Conflict(f"another {kind.noun} named {name!r} exists now; delete or rename that one first",
                       code="name_taken", details={"name": name}) from exc


def purge_due(now=None) -> dict[str, int]:
    """Purge every trashed volume whose time has come; a failure is logged and retried next round.
    Each row is claimed first (purged_at set while it is still in the trash and due), so a restore
    that took it meanwhile keeps it, and a restore that comes later finds it gone. The row keeps
    its trash_ref until the purge is done: a crash in between leaves it to the reconciler."""
    now = now or utcnow()
    counts = {"purged": 0, "failed": 0}
    for kind in KINDS:
        with db.reading() as session:
            # Newest first: a clone is made after its parent, and Ceph refuses to purge a parent whose trashed
            # snapshot a clone still needs (ENOTEMPTY). Children first, a whole family goes in one round; in the
            # database's own order a parent that came first failed and waited for the next round.
            due = list(session.scalars(select(kind.model).where(_due(kind.model, now))
                                       .order_by(kind.model.created_at.desc())))
        for volume in due:
            if not _claim_purge(volume, kind.model.purge_after <= now):
                continue  # restored, or purged by another replica, since it was read
            try:
                purge(kind, volume)
            except (RobinError, CephError) as exc:
                log.warning("purge failed", extra={"volume": volume.id, "error": exc.message})
                set_state(volume, VolumeState.DELETED, purged_at=None)
                counts["failed"] += 1
                continue
            counts["purged"] += 1
    return counts


def _due(model, now):
    return listing.in_trash(model) & (model.purge_after <= now)


def _claim_purge(volume: Volume, *conditions) -> bool:
    """Claim a trashed row for its purge: purged_at set in one UPDATE while the row is still in the trash, at the
    place the caller read (and while `conditions` hold). Of a restore (whose claim needs purged_at unset), another
    replica's purge and this one, racing, exactly one moves the row."""
    model, purged_at = type(volume), utcnow()
    with db.writing() as connection:
        moved = connection.execute(update(model.__table__).where(
            model.id == volume.id, listing.in_trash(model), model.trash_ref == volume.trash_ref, *conditions)
            .values(purged_at=purged_at, updated_at=purged_at)).rowcount
    volume.purged_at = purged_at
    return moved == 1


def purge_now(identity: Identity, kind: Kind, project: str, name: str, volume_id: str) -> None:
    """Purge one volume of the trash now, before its purge time (admins): the volume `volume_id` (the trash may
    hold several of a name), claimed and purged as purge_due does when its time comes. A failure puts the row back
    in the trash as it was, as purge_due does; the maintenance loop purges it in due course."""
    identity.require_admin()
    volume = _trashed(kind, project, name, volume_id)
    _refuse_trashed_clones(kind, volume)
    if not _claim_purge(volume):
        raise _not_in_trash(kind, project, name, volume_id)  # restored, or purged by another request, since read
    try:
        purge(kind, volume)
    except (RobinError, CephError):
        set_state(volume, VolumeState.DELETED, purged_at=None)
        raise


def _trashed(kind: Kind, project: str, name: str, volume_id: str) -> Volume:
    model = kind.model
    with db.reading() as session:
        project_id = projects.find(session, project).id
        volume = session.scalar(select(model).where(model.id == volume_id, model.project_id == project_id,
                                                    model.name == name, listing.in_trash(model)))
    if volume is None:
        raise _not_in_trash(kind, project, name, volume_id)
    return volume


def _not_in_trash(kind: Kind, project: str, name: str, volume_id: str) -> NotFound:
    return NotFound(f"project {project!r} has no {kind.noun} {name!r} with id {volume_id!r} in the trash: it was "
                    "never deleted, was restored or purged already, or the id is another volume's (list the trash "
                    "with ?trashed=true for the ids)", code="not_in_trash",
                    details={"project": project, "name": name, "id": volume_id})


def _refuse_trashed_clones(kind: Kind, volume: Volume) -> None:
    """Ceph refuses to purge an image whose snapshot a clone still needs (the clone in the trash too: a live clone
    refused the parent's delete). Refused here, before the claim, with the clones to purge first named."""
    if kind.model is not RbdImage:
        return
    with db.reading() as session:
        clones = session.execute(select(RbdImage.id, RbdImage.name).where(
            RbdImage.parent_id == volume.id,
            (RbdImage.state != VolumeState.DELETED) | RbdImage.trash_ref.is_not(None))
            .order_by(RbdImage.name, RbdImage.id)).all()
    if clones:
        raise Conflict(f"RBD image {volume.name!r} is the parent of clones {[row.name for row in clones]} "
                       "that Ceph still holds; purge them first (those in the trash by this request, with their "
                       "ids), or flatten or delete the live ones", code="volume_has_clones",
                       details={"clones": [row.name for row in clones], "clone_ids": [row.id for row in clones]})


def purge(kind: Kind, volume: Volume) -> None:
    """Purge a claimed row's volume from the trash (idempotent) and record that the trash no longer
    holds it: the end of a purge, whether purge_due, an admin's purge_now or, after a crash, the reconciler runs
    it."""
    kind.purge(ceph_connection(volume), volume)
    crash_point("volume.purge")
    audit.success_commits_next()  # an admin's purge_now; nothing outside a request
    set_state(volume, VolumeState.DELETED, trash_ref=None)


def unfinished_purges(model, cutoff) -> list[Volume]:
    with db.reading() as session:
        return list(session.scalars(select(model).where(
            model.state == VolumeState.DELETED, model.purged_at.is_not(None), model.trash_ref.is_not(None),
            model.updated_at <= cutoff)))


def _refuse_dependents(session: Session, kind: Kind, volume: Volume) -> None:
    """Refuse while clones of the image, or the data gateway, depend on the volume: one query for both checks,
    more only to name the clones of a refusal."""
    has_clones, is_activated = session.execute(_dependents_query(kind.model), {"volume_id": volume.id}).one()
    if has_clones and kind.model is RbdImage:
        clones = sorted(session.scalars(_LIVE_CLONES, {"volume_id": volume.id}))
        raise Conflict(f"RBD image {volume.name!r} is the parent of clones {clones}; flatten or delete them first",
                       code="volume_has_clones", details={"clones": clones})
    if has_clones:
        clones = sorted(session.scalars(_CEPHFS_CLONES, {"volume_id": volume.id}))
        raise Conflict(f"CephFS path {volume.name!r} is being cloned into {clones}; wait until they are available "
                       "or delete them first", code="volume_has_clones", details={"clones": clones})
    if is_activated:
        # Its mount on the data gateway would keep serving a volume that is gone.
        raise Conflict(f"{kind.noun} {volume.name!r} is activated on the data gateway; deactivate it first "
                       "(DELETE /v1/device/<name>)", code="volume_activated", details={"name": volume.name})


_LIVE_CLONES = select(RbdImage.name).where(RbdImage.parent_id == bindparam("volume_id"),
                                           RbdImage.state != VolumeState.DELETED)


# Clones the mgr is still copying from a CephFS path's snapshot (a finished clone stands alone).
_CEPHFS_CLONES = select(CephfsPath.name).where(CephfsPath.clone_of == bindparam("volume_id"),
                                               CephfsPath.state != VolumeState.DELETED)


@cache
def _dependents_query(model: type[Volume]):
    """(has live clones, is activated on the gateway) of the volume `volume_id`; built once per kind, as the
    statements of every delete are."""
    column = GatewayAccount.rbd_image_id if model is RbdImage else GatewayAccount.cephfs_path_id
    activated = select(GatewayAccount.username).where(column == bindparam("volume_id")).exists()
    cloned = (_LIVE_CLONES if model is RbdImage else _CEPHFS_CLONES).exists()
    return select(cloned, activated)


@dataclass
class _DoomedSnapshot:
    """A live snapshot of a volume being deleted: what removing it and recording that needs."""

    id: str
    name: str
    state: SnapshotState


def _snapshots_to_delete(session: Session, kind: Kind, volume: Volume,
                         with_snapshots: bool) -> list[_DoomedSnapshot]:
    """The volume's live snapshots, moved to `deleting` when the caller asked for them to go too."""
    rows = session.execute(_live_snapshots_query(kind), {"volume_id": volume.id}).all()
    if rows and not with_snapshots:
        names = sorted(row.name for row in rows)
        raise Conflict(f"{kind.noun} {volume.name!r} has snapshots {names}; delete them first, or delete with "
                       "?with_snapshots=true", code="volume_has_snapshots", details={"snapshots": names})
    if rows:
        session.execute(update(Snapshot.__table__).where(Snapshot.id.in_([row.id for row in rows]))
                        .values(state=SnapshotState.DELETING, updated_at=utcnow()))
    return [_DoomedSnapshot(row.id, row.name, SnapshotState.DELETING) for row in rows]


@cache
def _live_snapshots_query(kind: Kind):
    # Only what removing them needs, as plain rows: no snapshot objects, nor their volume (which the caller has).
    return select(Snapshot.id, Snapshot.name).where(getattr(Snapshot, kind.snapshot_fk) == bindparam("volume_id"),
                                                    Snapshot.state != SnapshotState.DELETED)


def _mark_snapshot_deleted(snapshot: _DoomedSnapshot) -> None:
    now = utcnow()
    with db.writing() as connection:
        connection.execute(update(Snapshot.__table__).where(Snapshot.id == snapshot.id).values(
            state=SnapshotState.DELETED, deleted_at=now, updated_at=now))
    snapshot.state = SnapshotState.DELETED


def _revert_snapshots(snapshots) -> None:
    ids = [snapshot.id for snapshot in snapshots]
    if ids:
        with db.writing() as connection:
            connection.execute(update(Snapshot.__table__).where(Snapshot.id.in_(ids)).values(
                state=SnapshotState.AVAILABLE, updated_at=utcnow()))
