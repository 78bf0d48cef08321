"""What a snapshot's write reads of the database, as Core rows made into the objects the services pass on.

A snapshot's create, delete and rollback and a clone's reservation read one volume of a locked project by name,
with its cluster (for the Ceph connection) and, for all but a create, one of its snapshots by name. Loading them
through an ORM session (the volume joined with its project, quota and cluster, the snapshot in a second query)
cost more Python than the database took to answer; here one statement, built once per kind, reads only the
columns, and the objects are made of them: the volume with its cluster and project attached, the snapshot with
its volume. The project comes from the locked row (projects.locked), so the volume needs no join to it.
"""
from __future__ import annotations

from functools import cache

from sqlalchemy import Connection, and_, bindparam, select
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from robin.clusters.models import CephCluster
from robin.projects.models import Project
from robin.projects.service import Locked
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.kinds import Kind
from robin.volumes.models import Volume, VolumeState


def _keys(model) -> tuple[str, ...]:
    """The attribute keys of a model's own table columns (a CephFS path's size_bytes is its quota_bytes column;
    RbdImage.parent_name, a subquery, is left out)."""
    table = model.__table__
    return tuple(attr.key for attr in model.__mapper__.column_attrs if attr.columns[0].table is table)


_CLUSTER_KEYS = _keys(CephCluster)
_SNAPSHOT_KEYS = _keys(Snapshot)


@cache
def _volume_keys(kind: Kind) -> tuple[str, ...]:
    return _keys(kind.model)


@cache
def _volume_query(kind: Kind, with_snapshot: bool):
    """The live volume `name` of the project `project_id` and its cluster's columns, then (with_snapshot) those
    of its live snapshot `snapshot`, all None when it has none of that name: one round trip for all three."""
    model = kind.model
    columns = [getattr(model, key) for key in _volume_keys(kind)] + [getattr(CephCluster, key)
                                                                      for key in _CLUSTER_KEYS]
    query = select(*columns).join(CephCluster, CephCluster.id == model.cluster_id)
    if with_snapshot:
        query = query.add_columns(*(getattr(Snapshot, key) for key in _SNAPSHOT_KEYS)).outerjoin(
            Snapshot, and_(getattr(Snapshot, kind.snapshot_fk) == model.id, Snapshot.name == bindparam("snapshot"),
                           Snapshot.state != SnapshotState.DELETED))
    return query.where(model.project_id == bindparam("project_id"), model.name == bindparam("name"),
                       model.state != VolumeState.DELETED)


def read(connection: Connection, kind: Kind, project: Locked, name: str,
         snapshot: str | None = None) -> tuple[Volume, Snapshot | None] | None:
    """The project's live volume `name` (with its cluster and project) and, when `snapshot` is given, its live
    snapshot of that name (None if it has none); None when there is no such volume."""
    with_snapshot = snapshot is not None
    row = connection.execute(_volume_query(kind, with_snapshot),
                             {"project_id": project.id, "name": name, "snapshot": snapshot}).first()
    if row is None:
        return None
    volume_keys = _volume_keys(kind)
    end = len(volume_keys) + len(_CLUSTER_KEYS)
    volume = kind.model(**dict(zip(volume_keys, row[:len(volume_keys)], strict=True)), cluster=_detached(CephCluster(
        **dict(zip(_CLUSTER_KEYS, row[len(volume_keys):end], strict=True)))),
        project=_detached(Project(id=project.id, name=project.name)))
    if not with_snapshot or row[end] is None:
        return volume, None
    return volume, snapshot_of(kind, volume, dict(zip(_SNAPSHOT_KEYS, row[end:], strict=True)))


def snapshot_of(kind: Kind, volume: Volume, values: dict) -> Snapshot:
    """A snapshot of `volume` made of its column values, its volume set as a loaded one would be."""
    snapshot = Snapshot(**values)
    set_committed_value(snapshot, kind.snapshot_relation, volume)  # no change to flush
    return snapshot


def _detached(instance):
    # As a loaded one would be, so that no session could ever take it for a new row to insert.
    make_transient_to_detached(instance)
    return instance
