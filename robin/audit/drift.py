"""Drift between robin's database and Ceph, for storage admins: found and reported, never touched.

Each finding is `{"kind", "project", "evidence"}` with one of the stable KINDS below; the evidence says
where (cluster, pool or file system, name or path) and what was found against what is recorded.
Rows in a transitional state younger than `older_than` are skipped, so a request under way is
never reported; the reconciler (which calls this for its drift) finishes the older ones.

What a survey costs, per registered cluster: per RBD pool, one listing (images with their ids, robin's
ownership directory, the trash) and one batched read of the image headers, then at most
ROBIN_DRIFT_OPENS image opens (robin.audit.image_checks says which); per CephFS file system,
a listing of the root and of each project directory, and per directory a stat, two xattrs and a
listing of its `.snap`. A full survey (`full`) opens every image.
"""
from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import lazyload

from robin import config
from robin.audit.image_checks import OpenBudget, check_images
from robin.audit.models import DriftCount, upsert
from robin.auth.identity import Identity
from robin.ceph import CephBusy, CephError, cephfs_ops, rbd_ops, subvolumes
from robin.clusters import service as clusters
from robin.clusters.models import CephCluster
from robin.db import db, utcnow
from robin.errors import RobinError
from robin.projects.models import Project
from robin.snapshots.models import Snapshot, SnapshotState
from robin.snapshots.schemas import RESERVED_PREFIX
from robin.volumes.kinds import TRASH_DIR
from robin.volumes.models import CephfsPath, RbdImage, Volume, VolumeState

KINDS = (
    "orphan_image",               # an image in robin's pool that robin did not make and has no row for
    "orphan_robin_image",         # an image robin's ownership directory marks as its own, with no live row
    "orphan_directory",           # a directory under robin's CephFS root with no row
    "orphan_robin_directory",     # ... marked with robin's volume id xattr, with no live row
    "orphan_subvolume",           # a CephFS subvolume (any group) with no row
    "orphan_robin_subvolume",     # ... marked with robin's volume id in its metadata, with no live row
    "missing_image",              # a row whose RBD image is gone
    "missing_directory",          # a row whose directory is gone
    "missing_subvolume",          # a row whose subvolume is gone (or only its snapshots are left)
    "size_mismatch",              # the image's size is not the row's
    "quota_mismatch",             # the directory's (subvolume's) quota is not the row's quota_bytes
    "snapshot_unknown_to_robin",  # a snapshot in Ceph with no row
    "snapshot_missing_in_ceph",   # a snapshot row whose snapshot is gone
    "trash_overdue",              # still in the trash after its purge time (and a maintenance round)
)
ORPHAN_KINDS = ("orphan_image", "orphan_robin_image", "orphan_directory", "orphan_robin_directory", "orphan_subvolume",
                "orphan_robin_subvolume")
DEFAULT_OLDER_THAN = timedelta(minutes=5)
# Rows whose Ceph object should exist (a deleting row's may be in the trash already).
EXPECTED_IN_CEPH = (VolumeState.CREATING, VolumeState.AVAILABLE, VolumeState.RESIZING, VolumeState.ROLLING_BACK,
                    VolumeState.FLATTENING, VolumeState.ERROR)


@dataclass
class DriftReport:
    findings: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    budget: OpenBudget = field(default_factory=lambda: OpenBudget(None))

    def add(self, kind: str, project: str | None, **evidence) -> None:
        self.findings.append({"kind": kind, "project": project, "evidence": evidence})

    def counts(self) -> dict[str, int]:
        found = Counter(finding["kind"] for finding in self.findings)
        return {kind: found.get(kind, 0) for kind in KINDS}


def find_drift(older_than: timedelta = DEFAULT_OLDER_THAN, full: bool = False) -> DriftReport:
    """Survey every registered cluster; `full` opens every RBD image instead of at most ROBIN_DRIFT_OPENS."""
    report = DriftReport(budget=OpenBudget(None if full else config.current().drift_opens))
    cutoff = utcnow() - older_than
    with db.reading() as session:
        registered = list(session.scalars(select(CephCluster).order_by(CephCluster.name)))
    for cluster in registered:
        places = [("pool", pool, _rbd_drift) for pool in config.current().rbd_pools]
        places += [("fs", fs_name, _cephfs_drift) for fs_name in config.current().cephfs_filesystems]
        for where, name, check in places:
            try:
                check(cluster, name, cutoff, report)
            except (RobinError, CephError) as exc:
                report.errors.append({"kind": "ceph_error", "cluster": cluster.name, where: name, "error": exc.message})
    _remember(report)
    return report


# --- rows --------------------------------------------------------------------------------------------

def _rows(model, cluster: CephCluster, cutoff: datetime, **where) -> list[Volume]:
    """Rows not yet purged, read after Ceph was surveyed, each with `recorded_snapshots`: its live
    snapshot rows and those deleted since the cutoff (the survey may have seen them still there)."""
    with db.reading() as session:
        rows = list(session.scalars(select(model).filter_by(cluster_id=cluster.id, **where)
                                    .where(model.purged_at.is_(None))))
        fk = getattr(Snapshot, "rbd_image_id" if model is RbdImage else "cephfs_path_id")
        snapshots = session.scalars(
            select(Snapshot).options(lazyload(Snapshot.rbd_image), lazyload(Snapshot.cephfs_path))
            .join(model, fk == model.id).where(model.cluster_id == cluster.id, model.purged_at.is_(None),
                                               *(getattr(model, key) == value for key, value in where.items()))
            .where((Snapshot.state != SnapshotState.DELETED) | (Snapshot.updated_at > cutoff)))
        by_volume: dict[str, list[Snapshot]] = {}
        for snapshot in snapshots:
            by_volume.setdefault(snapshot.rbd_image_id or snapshot.cephfs_path_id, []).append(snapshot)
    for row in rows:
        row.recorded_snapshots = by_volume.get(row.id, [])
    return rows


def _known(rows: list[Volume], key: str, cutoff: datetime) -> set[str]:
    """What an object in Ceph may belong to: live rows, and rows changed since the cutoff (a delete
    that finished between the survey and the reading of the rows)."""
    return {getattr(row, key) for row in rows if row.state is not VolumeState.DELETED or row.updated_at > cutoff}


def _settled(row, cutoff: datetime) -> bool:
    return row.state is VolumeState.AVAILABLE or row.updated_at <= cutoff


def _where(cluster: CephCluster, volume: Volume) -> dict:
    place = {"pool": volume.pool} if isinstance(volume, RbdImage) else {"fs": volume.fs_name, "path": volume.path}
    return {"cluster": cluster.name, **place, "name": volume.name, "volume_id": volume.id,
            "state": volume.state.value}


def _snapshot_drift(report: DriftReport, cluster: CephCluster, volume: Volume, in_ceph, cutoff: datetime) -> None:
    # A live row wins over a deleted one of the same name (a snapshot taken again).
    ordered = sorted(volume.recorded_snapshots, key=lambda snapshot: snapshot.state is not SnapshotState.DELETED)
    recorded = {snapshot.name: snapshot for snapshot in ordered}
    for name in sorted(set(in_ceph) - set(recorded)):
        if not name.startswith(RESERVED_PREFIX):  # a clone's temporary snapshot: the reconciler's
            report.add("snapshot_unknown_to_robin", volume.project.name, **_where(cluster, volume), snapshot=name)
    for name, snapshot in sorted(recorded.items()):
        settled = snapshot.state is SnapshotState.AVAILABLE or (
            snapshot.state not in (SnapshotState.DELETING, SnapshotState.DELETED) and snapshot.updated_at <= cutoff)
        if name not in in_ceph and settled:
            report.add("snapshot_missing_in_ceph", volume.project.name, **_where(cluster, volume), snapshot=name,
                       snapshot_id=snapshot.id, snapshot_state=snapshot.state.value,
                       recorded_at=snapshot.created_at.isoformat())


# --- RBD -----------------------------------------------------------------------------------------------

def _rbd_drift(cluster: CephCluster, pool: str, cutoff: datetime, report: DriftReport) -> None:
    conn = clusters.connection(cluster)
    listing = rbd_ops.pool_listing(conn, pool)
    checked = check_images(conn, cluster.id, pool, listing, report.budget, _live_names(cluster, pool))
    rows = _rows(RbdImage, cluster, cutoff, pool=pool)
    live = {row.name: row for row in rows if row.state is not VolumeState.DELETED}
    live_ids, known = {row.id for row in live.values()}, _known(rows, "name", cutoff)
    for name in sorted(listing.images):
        if name in known:
            continue
        owner = listing.owners.get(name)
        evidence = {"cluster": cluster.name, "pool": pool, "name": name, **_image_evidence(checked.details.get(name))}
        if owner is not None and owner not in live_ids:
            report.add("orphan_robin_image", None, **evidence, owner=owner)
        elif owner is None:
            report.add("orphan_image", None, **evidence)
        # Marked as a live row that has another name: renamed behind robin's back; that row's
        # missing_image reports it.
    for row in live.values():
        if _settled(row, cutoff):
            _rbd_row_drift(report, cluster, row, row.name in listing.images, checked.details.get(row.name), cutoff)
    _trash_drift(report, cluster, pool, listing.trash, rows, cutoff)


def _live_names(cluster: CephCluster, pool: str) -> set[str]:
    """Only to order the opens: the rows judged are read after them, like the rest of the survey."""
    with db.reading() as session:
        return set(session.scalars(select(RbdImage.name).where(
            RbdImage.cluster_id == cluster.id, RbdImage.pool == pool, RbdImage.state != VolumeState.DELETED)))


def _image_evidence(image: rbd_ops.ImageDetails | None) -> dict:
    """What an orphan's open showed; all None when this survey did not open it (deferred)."""
    if image is None:
        return {"size_bytes": None, "created_at": None, "snapshots": None, "parent": None}
    return {"size_bytes": image.size_bytes, "created_at": image.created_at.isoformat(),
            "snapshots": sorted(image.snapshots), "parent": "@".join(image.parent) if image.parent else None}


def _rbd_row_drift(report: DriftReport, cluster: CephCluster, row: RbdImage, listed: bool, image,
                   cutoff: datetime) -> None:
    """`image`: its details, None when listed but not known in this survey (its size and snapshots wait
    for a later one)."""
    if not listed:
        if row.state in EXPECTED_IN_CEPH:
            report.add("missing_image", row.project.name, **_where(cluster, row), recorded_size_bytes=row.size_bytes)
        return
    if image is None or row.state is not VolumeState.AVAILABLE:
        return
    if image.size_bytes != row.size_bytes:
        report.add("size_mismatch", row.project.name, **_where(cluster, row), recorded_size_bytes=row.size_bytes,
                   found_size_bytes=image.size_bytes)
    _snapshot_drift(report, cluster, row, image.snapshots, cutoff)


def _trash_drift(report: DriftReport, cluster: CephCluster, pool: str, trash, rows, cutoff: datetime) -> None:
    """Robin purges at purge_after (foreign trash entries at Ceph's own deferment end); still there
    a maintenance round (`older_than`) later is overdue."""
    by_trash_ref = {row.trash_ref: row for row in rows if row.trash_ref}
    for entry in trash:
        row = by_trash_ref.get(entry.image_id)
        due = row.purge_after if row is not None and row.purge_after else entry.deferment_end
        if due <= cutoff:
            report.add("trash_overdue", row.project.name if row else None, cluster=cluster.name, pool=pool,
                       name=entry.name, trash_id=entry.image_id, volume_id=row.id if row else None,
                       purge_after=due.isoformat())


# --- CephFS ---------------------------------------------------------------------------------------------

def _cephfs_drift(cluster: CephCluster, fs_name: str, cutoff: datetime, report: DriftReport) -> None:
    conn = clusters.connection(cluster)
    root = config.current().cephfs_root
    listed = _subvolume_listing(conn, fs_name) if _holds_subvolumes(cluster, fs_name) else {}
    rows = _rows(CephfsPath, cluster, cutoff, fs_name=fs_name)
    live = {row.path: row for row in rows if row.state is not VolumeState.DELETED}
    live_ids, known = {row.id for row in live.values()}, _known(rows, "path", cutoff)
    with db.reading() as session:
        projects = set(session.scalars(select(Project.name)))
    for top in sorted(cephfs_ops.list_dirs(conn, fs_name, root)):
        if top == TRASH_DIR:
            continue
        top_path = posixpath.join(root, top)
        if top not in projects:
            report.add("orphan_directory", None, cluster=cluster.name, fs=fs_name, path=top_path, name=top,
                       reason="not the directory of any project")
            continue
        for name in sorted(cephfs_ops.list_dirs(conn, fs_name, top_path)):
            path = posixpath.join(top_path, name)
            if path not in known:
                _cephfs_orphan(report, conn, cluster, fs_name, path, top, live_ids)
    for row in live.values():
        if not _settled(row, cutoff):
            continue
        if row.layout == config.CEPHFS_SUBVOLUME:
            _subvolume_row_drift(report, conn, cluster, row, listed, cutoff)
        else:
            _cephfs_row_drift(report, conn, cluster, row, cutoff)
    _cephfs_trash_drift(report, cluster, rows, cutoff)
    _subvolume_orphans(report, conn, cluster, fs_name, listed, rows, cutoff, projects)


def _cephfs_orphan(report, conn, cluster, fs_name: str, path: str, project: str, live_ids) -> None:
    found = cephfs_ops.describe_dir(conn, fs_name, path)
    if found is None or found.owner in live_ids:
        return  # gone since the listing, or a live row's (renamed behind robin's back: its row reports it)
    kind = "orphan_directory" if found.owner is None else "orphan_robin_directory"
    extra = {} if found.owner is None else {"owner": found.owner}
    report.add(kind, project, cluster=cluster.name, fs=fs_name, path=path, name=posixpath.basename(path),
               quota_bytes=found.quota_bytes, created_at=found.created_at.isoformat(),
               snapshots=list(found.snapshots), **extra)


def _cephfs_row_drift(report, conn, cluster, row: CephfsPath, cutoff: datetime) -> None:
    found = cephfs_ops.describe_dir(conn, row.fs_name, row.path)
    if found is None:
        if row.state in EXPECTED_IN_CEPH:
            report.add("missing_directory", row.project.name, **_where(cluster, row),
                       recorded_quota_bytes=row.size_bytes)
        return
    if row.state is not VolumeState.AVAILABLE:
        return
    if found.quota_bytes != row.size_bytes:
        report.add("quota_mismatch", row.project.name, **_where(cluster, row), recorded_quota_bytes=row.size_bytes,
                   found_quota_bytes=found.quota_bytes)
    _snapshot_drift(report, cluster, row, found.snapshots, cutoff)


# --- CephFS subvolumes -----------------------------------------------------------------------------------

def _holds_subvolumes(cluster: CephCluster, fs_name: str) -> bool:
    """Whether robin places subvolumes in the file system, or has (had) any there: then every subvolume group
    is surveyed. A file system that only ever held directories is not (its subvolumes are no concern of robin's
    until it is told to use them)."""
    if config.current().cephfs_layout(fs_name) == config.CEPHFS_SUBVOLUME:
        return True
    with db.reading() as session:
        return session.scalar(select(CephfsPath.id).where(
            CephfsPath.cluster_id == cluster.id, CephfsPath.fs_name == fs_name,
            CephfsPath.layout == config.CEPHFS_SUBVOLUME).limit(1)) is not None


def _subvolume_listing(conn, fs_name: str) -> dict[tuple[str, str], None]:
    """(group, name) of every subvolume of the file system, those without a group (`_nogroup`) too; in order."""
    listed = {}
    for group in sorted({*subvolumes.list_groups(conn, fs_name), subvolumes.NO_GROUP}):
        for name in sorted(subvolumes.list_names(conn, fs_name, group)):
            listed[(group, name)] = None
    return listed


def _subvolume_where(cluster: CephCluster, fs_name: str, group: str, name: str) -> dict:
    return {"cluster": cluster.name, "fs": fs_name, "group": group, "name": name}


def _subvolume_orphans(report, conn, cluster, fs_name: str, listed, rows, cutoff: datetime, projects) -> None:
    """A subvolume no row knows: in a project's group, that project's finding; elsewhere (ceph-csi's `csi`, the
    mgr's `_nogroup`) no project's."""
    known = {(row.subvolume_group, row.name) for row in rows if row.layout == config.CEPHFS_SUBVOLUME
             and (row.state is not VolumeState.DELETED or row.updated_at > cutoff)}
    live_ids = {row.id for row in rows if row.state is not VolumeState.DELETED}
    for group, name in listed:
        if (group, name) in known:
            continue
        where = _subvolume_where(cluster, fs_name, group, name)
        try:
            found = subvolumes.info(conn, fs_name, group, name)
        except CephBusy:
            # A clone being copied, or one that failed or was canceled: only its clone status answers.
            status = subvolumes.clone_status(conn, fs_name, group, name)
            report.add("orphan_subvolume", group if group in projects else None, **where,
                       subvolume_state=status.state if status else None, path=None, quota_bytes=None,
                       created_at=None, snapshots=[])
            continue
        if found is None or found.owner in live_ids:
            continue  # gone since the listing, or a live row's in another group (its row reports it)
        kind = "orphan_subvolume" if found.owner is None else "orphan_robin_subvolume"
        extra = {} if found.owner is None else {"owner": found.owner}
        snapshots = subvolumes.list_snapshots(conn, fs_name, group, name) if found.path else []
        report.add(kind, group if group in projects else None, **where,
                   subvolume_state=found.state, path=found.path, quota_bytes=found.quota_bytes,
                   created_at=found.created_at.isoformat() if found.created_at else None,
                   snapshots=sorted(snapshots), **extra)


def _subvolume_row_drift(report, conn, cluster, row: CephfsPath, listed, cutoff: datetime) -> None:
    if row.clone_of is not None:
        return  # a clone the mgr may still be copying: the reconciler's
    found = None
    if (row.subvolume_group, row.name) in listed:
        found = subvolumes.info(conn, row.fs_name, row.subvolume_group, row.name)
    if found is None or found.state == subvolumes.SNAPSHOT_RETAINED:
        if row.state in EXPECTED_IN_CEPH:
            report.add("missing_subvolume", row.project.name, **_where(cluster, row), group=row.subvolume_group,
                       recorded_quota_bytes=row.size_bytes)
        return
    if row.state is not VolumeState.AVAILABLE:
        return
    if found.quota_bytes != row.size_bytes:
        report.add("quota_mismatch", row.project.name, **_where(cluster, row), recorded_quota_bytes=row.size_bytes,
                   found_quota_bytes=found.quota_bytes)
    in_ceph = subvolumes.list_snapshots(conn, row.fs_name, row.subvolume_group, row.name)
    _snapshot_drift(report, cluster, row, in_ceph, cutoff)


def _cephfs_trash_drift(report, cluster, rows, cutoff: datetime) -> None:
    """From the rows: a trashed directory keeps no time of its own in CephFS."""
    conn = clusters.connection(cluster)
    for row in rows:
        if row.state is VolumeState.DELETED and row.trash_ref and row.purge_after and row.purge_after <= cutoff:
            if cephfs_ops.describe_dir(conn, row.fs_name, row.trash_ref) is not None:
                report.add("trash_overdue", row.project.name, cluster=cluster.name, fs=row.fs_name, name=row.name,
                           path=row.trash_ref, volume_id=row.id, purge_after=row.purge_after.isoformat())


# --- the last counts, for the metrics scrape ---------------------------------------------------------------

def _remember(report: DriftReport) -> None:
    """Store this survey's counts in place of the last one's, for every worker's and replica's scrape."""
    now = utcnow()
    with db.unit_of_work() as session:
        upsert(session, DriftCount, DriftCount.kind, [{"kind": kind, "findings": count, "surveyed_at": now}
                                                      for kind, count in report.counts().items()])
        session.execute(delete(DriftCount).where(DriftCount.kind.not_in(KINDS)))  # a kind this robin dropped


def last_survey_at() -> datetime | None:
    """When the last survey whose counts are stored ran (None: never)."""
    with db.reading() as session:
        return session.scalar(select(func.max(DriftCount.surveyed_at)))


def survey_if_due(interval: timedelta) -> DriftReport | None:
    """The maintenance loop's survey: only when the stored one is older than `interval` (its own, slower
    schedule than the loop's rounds)."""
    last = last_survey_at()
    if last is not None and utcnow() - last < interval:
        return None
    return find_drift()


def metric_counts() -> dict:
    """For the scrape: the stored counts and their survey's time, read from the database only (a
    survey is the maintenance loop's). Empty counts and no time before the first survey."""
    with db.reading() as session:
        rows = session.execute(select(DriftCount.kind, DriftCount.findings, DriftCount.surveyed_at)).all()
    return {"counts": {kind: findings for kind, findings, _ in rows},
            "surveyed_at": max((at for _, _, at in rows), default=None)}


def report_for(identity: Identity, older_than: timedelta, kinds=None, full: bool = False) -> dict:
    """The drift report for auditors and admins; the counts always cover every kind. A full survey
    (every image opened: its cost grows with the pools) is for admins."""
    if full or not identity.sees_all_projects:
        identity.require_admin()
    report = find_drift(older_than, full)
    findings = [finding for finding in report.findings if not kinds or finding["kind"] in kinds]
    return {"findings": findings, "counts": report.counts(), "errors": report.errors,
            "coverage": report.budget.coverage()}
