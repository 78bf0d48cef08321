"""Projects and quotas. Quota usage is always summed from the rows that consume it."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, literal_column, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager

from robin.auth.identity import Identity
from robin.auth.models import ApiToken
from robin.auth.service import TOKEN_CACHE_TTL_S, token_cache
from robin.ceph import cephx_users
from robin.clusters import service as clusters
from robin.clusters.models import CephCluster
from robin.db import db
from robin.errors import Conflict, NotFound, QuotaExceeded
from robin.pagination import Page, decode_cursor, encode_cursor
from robin.projects.models import Project, Quota
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import VOLUME_MODELS, CephfsPath, RbdImage, VolumeState, reserved_bytes


@dataclass(frozen=True)
class Provisioned:
    bytes: int
    volumes: int
    snapshots: int = 0


def _not_found(name: str) -> NotFound:
    return NotFound(f"project {name!r} does not exist", code="project_not_found", details={"project": name})


def find(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise _not_found(name)
    return project


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_volumes: int
    max_snapshots: int


@dataclass(frozen=True)
class Locked:
    """A project whose quota row the caller's transaction holds locked, as plain values (what reserve reads):
    a row, not a Project and its Quota loaded as objects."""

    id: int
    name: str
    quota: Limits


def _lock_query():
    return (select(Project).join(Project.quota).options(contains_eager(Project.quota))
            .where(Project.name == bindparam("name")).with_for_update(of=Quota))


def _lock_quota_query():
    return (select(Project.id, Project.name, Quota.max_bytes, Quota.max_volumes, Quota.max_snapshots)
            .join(Quota, Quota.project_id == Project.id).where(Project.name == bindparam("name"))
            .with_for_update(of=Quota))


def _provisioned_query():
    """One round trip of scalar subqueries: bytes and count per volume kind, then snapshots."""
    project_id = bindparam("project_id")
    columns = []
    for model in VOLUME_MODELS:
        # The state as a literal, the usage index's own condition: a bound value would leave the planner unable to
        # tell that the index holds every row asked for (PostgreSQL's generic plans), or make it visit each row to
        # check it (SQLite).
        live = (model.project_id == project_id) & (model.state != literal_column(f"'{VolumeState.DELETED.value}'"))
        columns += [select(func.coalesce(func.sum(reserved_bytes(model)), 0)).where(live).scalar_subquery(),
                    select(func.count()).select_from(model).where(live).scalar_subquery()]
    columns.append(select(func.count()).select_from(Snapshot).where(
        Snapshot.project_id == project_id, Snapshot.state != SnapshotState.DELETED).scalar_subquery())
    return select(*columns)


# Built once: these run on every create and resize, and building a statement costs more Python
# than SQLite takes to run it.
LOCK_QUERY = _lock_query()
LOCK_QUOTA_QUERY = _lock_quota_query()
PROVISIONED_QUERY = _provisioned_query()


def lock(session: Session, name: str) -> Project:
    """The project with its quota row locked until the transaction ends (PostgreSQL FOR UPDATE;
    on SQLite the caller's BEGIN IMMEDIATE already holds the database's write lock)."""
    project = session.scalar(LOCK_QUERY, {"name": name})
    if project is None:
        raise _not_found(name)
    return project


def lock_quota(session: Session | Connection, name: str) -> Locked:
    """lock() for a reservation, which needs the project's id, name and limits only: the same lock, taken by a
    statement whose answer stays a row (no Project and Quota objects to load); `session` may be a Core
    connection."""
    return locked(session.execute(LOCK_QUOTA_QUERY, {"name": name}).first(), name)


def locked(row, name: str) -> Locked:
    """The answer of LOCK_QUOTA_QUERY (or of a statement that adds columns to it) for the project `name`."""
    if row is None:
        raise _not_found(name)
    return Locked(row.id, row.name, Limits(row.max_bytes, row.max_volumes, row.max_snapshots))


def provisioned(session: Session | Connection, project_id: int) -> Provisioned:
    """Bytes, volumes and snapshots the project's live rows hold (RBD images and CephFS paths alike); `session`
    may be a Core connection too."""
    *per_model, snapshots = session.execute(PROVISIONED_QUERY, {"project_id": project_id}).one()
    return Provisioned(bytes=int(sum(per_model[0::2])), volumes=int(sum(per_model[1::2])), snapshots=int(snapshots))


def reserve(session: Session | Connection, project: Project | Locked, *, add_bytes: int = 0, add_volumes: int = 0,
            add_snapshots: int = 0) -> None:
    """Refuse unless the project's quota holds `add_*` more. Call with the project locked (in the transaction of
    `session`, or of a Core connection)."""
    quota = project.quota
    used = provisioned(session, project.id)
    remaining = {"bytes": quota.max_bytes - used.bytes, "volumes": quota.max_volumes - used.volumes,
                 "snapshots": quota.max_snapshots - used.snapshots}
    details = {"project": project.name, "requested_bytes": add_bytes, "requested_volumes": add_volumes,
               "requested_snapshots": add_snapshots,
               **{f"remaining_{key}": max(0, value) for key, value in remaining.items()}}
    if add_volumes > remaining["volumes"]:
        raise QuotaExceeded(f"project {project.name!r} may have {quota.max_volumes} volumes and has "
                            f"{used.volumes}", details=details)
    if add_snapshots > remaining["snapshots"]:
        raise QuotaExceeded(f"project {project.name!r} may have {quota.max_snapshots} snapshots and has "
                            f"{used.snapshots}", details=details)
    if add_bytes > remaining["bytes"]:
        raise QuotaExceeded(f"project {project.name!r} has {max(0, remaining['bytes'])} bytes of quota left; "
                            f"{add_bytes} were requested", details=details)


def create(identity: Identity, name: str, quota: dict) -> Project:
    identity.require_admin()
    try:
        with db.unit_of_work() as session:
            project = Project(name=name, quota=Quota(**quota))
            session.add(project)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"project {name!r} already exists", code="project_exists",
                       details={"project": name}) from exc
    return project


def get(identity: Identity, name: str) -> Project:
    identity.require_read(name)
    with db.reading() as session:
        return find(session, name)


LIST_QUERY = select(Project.name, Project.created_at, Quota.max_bytes, Quota.max_volumes,
                    Quota.max_snapshots).join(Quota)


def list_visible(identity: Identity, limit: int, cursor: str | None) -> Page:
    """The projects the token sees by name, items in their wire form (as ProjectSchema writes them)."""
    query = LIST_QUERY
    if not identity.sees_all_projects:
        query = query.where(Project.name == identity.project)
    if cursor:
        query = query.where(Project.name > decode_cursor(cursor))
    with db.reading() as session:
        rows = session.execute(query.order_by(Project.name).limit(limit + 1)).all()
    more = len(rows) > limit
    items = [{"name": row.name, "created_at": row.created_at.isoformat(),
              "quota": {"max_bytes": row.max_bytes, "max_volumes": row.max_volumes,
                        "max_snapshots": row.max_snapshots}} for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1]["name"]) if more else None)


def update_quota(identity: Identity, name: str, changes: dict) -> Project:
    identity.require_admin()
    with db.unit_of_work() as session:
        project = lock(session, name)
        used = provisioned(session, project.id)
        new = {key: changes.get(key, getattr(project.quota, key)) for key in ("max_bytes", "max_volumes",
                                                                              "max_snapshots")}
        if new["max_bytes"] < used.bytes or new["max_volumes"] < used.volumes or new["max_snapshots"] < used.snapshots:
            raise Conflict(
                f"project {name!r} already uses {used.bytes} bytes in {used.volumes} volumes with "
                f"{used.snapshots} snapshots; a quota below that would be exceeded at once. Delete some first.",
                code="quota_below_usage",
                details={"provisioned_bytes": used.bytes, "volumes": used.volumes, "snapshots": used.snapshots})
        for key, value in changes.items():
            setattr(project.quota, key, value)
        session.flush()
        return project


def delete(identity: Identity, name: str) -> None:
    """Drop the project and every row it holds, deleted volumes' included, once the cephx users of its CephFS
    paths are gone: a user a failed removal left is known to no row afterwards, and its caps name a path (or a
    subvolume's RADOS namespace) that a project made again under this name, with a volume of the same name, would
    have again."""
    identity.require_admin()
    removed: set[str] = set()
    tokens = None
    while tokens is None:  # again when a path was deleted meanwhile: its user goes too, then the rows
        removed |= _remove_path_users(name, removed)
        tokens = _drop(name, removed)
    token_cache.clear()  # its tokens are gone: in this process at once, elsewhere within the cache's TTL
    if tokens:
        # Tokens are cached by project name: until every process has forgotten them, a project made again under
        # this name would take its predecessor's members. Return only then, as a token's revocation does.
        time.sleep(TOKEN_CACHE_TTL_S)


# `auth rm` calls at once: on the development cluster four at a time took three quarters of the time one by one
# (docs/consistency.md#deleting-a-project).
USER_REMOVALS_AT_ONCE = 4


def _remove_path_users(name: str, removed: set[str]) -> set[str]:
    """Remove the users of the project's CephFS paths not in `removed` (all of them deleted, or the project is not
    empty); the ids of the paths whose users are gone. Ceph is called outside any transaction; a Ceph error
    refuses the delete, before anything is dropped."""
    with db.reading() as session:
        project = find(session, name)
        _refuse_if_live(session, project)
        rows = session.execute(select(CephfsPath.id, CephfsPath.cluster_id).where(
            CephfsPath.project_id == project.id)).all()
        used = session.scalars(select(CephCluster).where(CephCluster.id.in_({row.cluster_id for row in rows})))
        connections = {cluster.id: clusters.connection(cluster) for cluster in used}
    paths = [(row.id, connections[row.cluster_id]) for row in rows if row.id not in removed]
    if paths:
        with ThreadPoolExecutor(min(USER_REMOVALS_AT_ONCE, len(paths))) as pool:
            # list(): the first failure is raised here, once every removal ran
            list(pool.map(lambda path: cephx_users.deauthorize(path[1], path[0]), paths))
    return {volume_id for volume_id, _ in paths}


def _drop(name: str, removed: set[str]) -> int | None:
    """Drop the project and its rows, and answer how many tokens went; None, dropping nothing, if one of its CephFS
    paths is not in `removed` (deleted after the users were removed)."""
    with db.unit_of_work() as session:
        project = lock(session, name)
        _refuse_if_live(session, project)
        if set(session.scalars(select(CephfsPath.id).where(CephfsPath.project_id == project.id))) - removed:
            return None
        # Rows of deleted volumes go with it: their history stays in the audit events.
        session.execute(Snapshot.__table__.delete().where(Snapshot.project_id == project.id))
        for model in VOLUME_MODELS:
            session.execute(model.__table__.delete().where(model.project_id == project.id))
        tokens = session.execute(ApiToken.__table__.delete().where(ApiToken.project_id == project.id)).rowcount
        session.delete(project)
    return tokens


# The API collection of each kind of volume, for a refusal that says which requests purge the trash.
COLLECTIONS = {RbdImage: "rbd-images", CephfsPath: "cephfs-paths"}


def _refuse_if_live(session: Session, project: Project) -> None:
    """Refuse while the project holds data in Ceph: a live volume, or one in the trash (deleted, not yet purged:
    `trash_ref` is cleared when its purge is done). A trashed volume's row is what its purge and the reconciler
    work from, and a trashed subvolume's row is what keeps its name, and the RADOS namespace named after it, from
    another project (robin.volumes.kinds); dropped, its data would stay in Ceph with nothing to remove it."""
    held = [(model, row) for model in VOLUME_MODELS for row in session.execute(
        select(model.id, model.name, model.state).where(
            model.project_id == project.id,
            or_(model.state != VolumeState.DELETED, model.trash_ref.is_not(None))).limit(20))]
    if not held:
        return
    live = [row.name for _, row in held if row.state is not VolumeState.DELETED]
    trash = [{"collection": COLLECTIONS[model], "name": row.name, "id": row.id}
             for model, row in held if row.state is VolumeState.DELETED]
    problems = (["delete its volumes"] if live else []) + (
        ["purge its trash (each volume in details.trash: POST /api/v2/projects/<project>/<collection>/<name>/purge"
         "?id=<id>), or let it be purged at each volume's purge_after"] if trash else [])
    raise Conflict(f"project {project.name!r} still holds volumes in Ceph; first {' and '.join(problems)}",
                   code="project_not_empty",
                   details={"volumes": live, "in_trash": [volume["name"] for volume in trash], "trash": trash})
