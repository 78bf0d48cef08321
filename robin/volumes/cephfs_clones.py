"""Clones of CephFS subvolumes: `fs subvolume snapshot clone`, which the mgr copies in the background.

The clone's row goes in as `creating` with its quota reserved (its full size, at the request), then the mgr is
asked to clone; the row names its source (clone_of, clone_snapshot) and stays `creating` until `fs clone status`
says complete. Whoever looks next finishes it: a read of the volume, or the reconciler (after a crash too). A
finish marks the subvolume as robin's, gives it the requested quota, records its path and makes the row
available. A clone that failed, or was canceled behind robin's back, is removed and its row dropped, releasing
the quota. Deleting a cloning volume cancels the clone (`fs clone cancel`) and removes what was copied.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from robin import config
from robin.audit import service as audit
from robin.auth.identity import Identity
from robin.ceph import CephAlreadyExists, CephError, subvolumes
from robin.db import db
from robin.errors import BadRequest, Conflict, InvalidInput, RobinError
from robin.faults import crash_point
from robin.projects import service as projects
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes import kinds
from robin.volumes import service as volumes
from robin.volumes.kinds import CEPHFS
from robin.volumes.models import CephfsPath, VolumeState

log = logging.getLogger(__name__)


# A clone's row while the mgr may be copying: creating, or error when Ceph stopped answering as it was asked.
UNSETTLED = (VolumeState.CREATING, VolumeState.ERROR)


def cloning(volume) -> bool:
    """Whether the row is a clone the mgr may still be copying."""
    return isinstance(volume, CephfsPath) and volume.clone_of is not None and volume.state in UNSETTLED


def clone(identity: Identity, project: str, spec: dict) -> CephfsPath:
    """Start cloning a snapshot of one of the project's subvolumes into a new volume of the project."""
    identity.require_write(project)
    child, parent = _reserve(project, spec)
    conn = volumes.ceph_connection(child)
    try:
        subvolumes.clone(conn, parent.fs_name, parent.subvolume_group, parent.name, child.clone_snapshot,
                         child.subvolume_group, child.name)
    except (RobinError, CephError) as exc:
        volumes.undo_create(CEPHFS, child, exc)
        if isinstance(exc, CephAlreadyExists):
            raise volumes.name_taken(CEPHFS, child.name, child.cluster.name) from exc
        raise
    crash_point("volume.clone")
    audit.success_commits_next()
    return settle(child, started=True)


def _reserve(project: str, spec: dict) -> tuple[CephfsPath, CephfsPath]:
    """The clone's row in `creating` with its quota reserved, in the transaction that finds its source and the
    source's snapshot available."""
    source = spec["source"]
    try:
        with db.unit_of_work() as session:
            project_row = projects.lock_quota(session, project)
            parent = volumes.find(session, CEPHFS, project, source["path"])
            volumes.require_available(CEPHFS, parent, "cloned")
            if parent.layout != config.CEPHFS_SUBVOLUME:
                raise BadRequest(f"CephFS path {parent.name!r} is a directory: only subvolumes are cloned (see the "
                                 "CephFS layouts in the operations guide); copy its data into a new path instead",
                                 code="clone_not_supported", details={"layout": parent.layout})
            snapshot = _snapshot(session, parent, source["snapshot"])
            _require_parents_placement(spec, parent)
            placement = {"id": str(uuid.uuid4()), "fs_name": parent.fs_name, "layout": config.CEPHFS_SUBVOLUME,
                         "subvolume_group": project, "path": kinds.LAYOUTS[config.CEPHFS_SUBVOLUME].path(
                             project, spec["name"]), "clone_of": parent.id, "clone_snapshot": snapshot.name}
            size = spec.get("size_bytes", snapshot.size_bytes)
            child = volumes.insert_new(session, CEPHFS, project_row, parent.cluster, {**spec, "size_bytes": size},
                                       placement)
    except IntegrityError as exc:
        raise volumes.name_taken(CEPHFS, spec["name"], parent.cluster.name) from exc
    return child, parent


def _snapshot(session, parent: CephfsPath, name: str) -> Snapshot:
    snapshot = session.scalar(select(Snapshot).where(Snapshot.cephfs_path_id == parent.id, Snapshot.name == name,
                                                     Snapshot.state != SnapshotState.DELETED))
    if snapshot is None or snapshot.state is not SnapshotState.AVAILABLE:
        raise InvalidInput(f"CephFS path {parent.name!r} has no available snapshot {name!r} to clone",
                           details={"fields": {"source": {"snapshot": ["no such available snapshot"]}}})
    return snapshot


def _require_parents_placement(spec: dict, parent: CephfsPath) -> None:
    """The mgr clones within a file system: a clone elsewhere is refused, not quietly placed beside its source."""
    placement = {"cluster": parent.cluster.name, "fs": parent.fs_name}
    elsewhere = {field: [f"must be {value!r}, the source's, or left out"] for field, value in placement.items()
                 if spec.get(field, value) != value}
    if elsewhere:
        raise InvalidInput(f"a clone lives on its source's cluster {placement['cluster']!r} and file system "
                           f"{placement['fs']!r}; leave out \"cluster\" and \"fs\" or give those",
                           code="clone_placement", details={"fields": elsewhere, "source": placement})


# --- where a clone stands ---------------------------------------------------------------------------------

class CloneFailed(Conflict):
    """The mgr gave up the clone (or it was canceled outside robin): its row is gone and its quota released."""


@dataclass
class Progress:
    """What a read of a cloning volume shows beside its row (`clone` in its answer)."""

    source: dict
    status: str
    progress: dict | None


def settle(volume: CephfsPath, *, started: bool = False, cutoff: datetime | None = None) -> CephfsPath:
    """The cloning row as Ceph has it now: finished when the clone is complete; removed (CloneFailed) when it
    failed; otherwise still `creating`, with `clone_progress` set. `started`: the request that has just asked the
    mgr (its success is this row's next commit). A clone Ceph does not know is one never started (a crash before
    the mgr was asked): dropped only when the row is older than `cutoff` (the reconciler's), never under a
    request that may be about to ask."""
    conn = volumes.ceph_connection(volume)
    status = subvolumes.clone_status(conn, volume.fs_name, volume.subvolume_group, volume.name)
    if status is not None and status.state == subvolumes.CLONE_COMPLETE:
        return _finish(conn, volume)
    if status is not None and status.state in subvolumes.CLONE_ENDED:
        _drop(volume, f"the clone {status.state}: {status.failure or 'no reason given'}")
        raise CloneFailed(f"the clone of {volume.name!r} {status.state} in Ceph ({status.failure or 'no reason'}); "
                          "its quota is released: clone again", code="clone_failed",
                          details={"name": volume.name, "state": status.state, "failure": status.failure})
    if status is None and cutoff is not None and volume.updated_at <= cutoff:
        _drop(volume, "the clone was never started")
        raise CloneFailed(f"the clone of {volume.name!r} was never started in Ceph; its quota is released",
                          code="clone_failed", details={"name": volume.name, "state": None})
    if started:
        # Its second commit: the request's outcome (the row stays creating).
        volume = volumes.set_state(volume, VolumeState.CREATING)
    volume.clone_progress = Progress(_source(volume), status.state if status else "pending",
                                     status.progress if status else None)
    return volume


def _source(volume: CephfsPath) -> dict:
    with db.reading() as session:
        parent = session.scalar(select(CephfsPath.name).where(CephfsPath.id == volume.clone_of))
    return {"path": parent, "snapshot": volume.clone_snapshot}


def _finish(conn, volume: CephfsPath) -> CephfsPath:
    group, name = volume.subvolume_group, volume.name
    subvolumes.mark_owner(conn, volume.fs_name, group, name, volume.id)
    found = subvolumes.info(conn, volume.fs_name, group, name)
    if found.quota_bytes != volume.size_bytes:
        subvolumes.resize(conn, volume.fs_name, group, name, volume.size_bytes)
    crash_point("volume.clone_finished")
    return volumes.set_state(volume, VolumeState.AVAILABLE, path=found.path, clone_of=None, clone_snapshot=None,
                             error_message=None)


def _drop(volume: CephfsPath, reason: str) -> None:
    log.warning("CephFS clone dropped", extra={"volume": volume.id, "reason": reason})
    CEPHFS.remove(volumes.ceph_connection(volume), volume)
    with db.unit_of_work() as session:
        session.execute(CephfsPath.__table__.delete().where(CephfsPath.id == volume.id,
                                                            CephfsPath.state.in_(UNSETTLED)))


def get(identity: Identity, project: str, name: str) -> CephfsPath | None:
    """A clone under way as a read shows it (with `clone_progress`), or finished if the mgr is done; None when the
    volume is not a clone under way."""
    identity.require_read(project)
    with db.reading() as session:
        volume = volumes.find(session, CEPHFS, project, name)
    return settle(volume) if cloning(volume) else None
