"""Usage reports: how many bytes each volume occupies in Ceph, against what it was promised.

Measuring is the slow part (reading RBD images' object maps, or opening the images whose maps do not
answer; a getxattr per CephFS path), so it is done apart from reading: `refresh` measures live volumes in
parallel with a bounded thread pool on the process's one connection per cluster (the bindings release the
GIL) and stores each figure with its method and time in the `volume_usage` table. Every gunicorn worker, the CLI,
a project's usage (GET /projects/{p}/usage) and the metrics scrape read that table; the maintenance
loop re-measures figures older than MAX_AGE, and an admin may ask for a refresh now (of everything,
or of one project). A report always says how old each figure is.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, text, union_all

from robin import config
from robin.audit import forecast, history
from robin.audit.models import VolumeTotal, VolumeUsage, upsert
from robin.auth.identity import Identity
from robin.ceph import CephError, CephUnavailable, cephfs_ops, object_map, rbd_ops
from robin.clusters import service as clusters
from robin.clusters.models import CephCluster
from robin.db import db, utcnow
from robin.errors import Forbidden, RobinError
from robin.projects.models import Project, Quota
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import CephfsPath, RbdImage, Volume, VolumeState, reserved_bytes

log = logging.getLogger(__name__)
RBYTES = "rbytes"
# The maintenance loop re-measures figures older than this (and volumes never measured).
MAX_AGE = timedelta(minutes=15)


@dataclass
class RefreshResult:
    measured: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# --- measuring ----------------------------------------------------------------------------------

def _measure(volume: Volume) -> rbd_ops.Measured:
    conn = clusters.connection(volume.cluster)
    if isinstance(volume, RbdImage):
        return rbd_ops.measure_image(conn, volume.pool, volume.name)
    return rbd_ops.Measured(cephfs_ops.used_bytes(conn, volume.fs_name, volume.path), RBYTES)


# Images of one pool measured from their object maps in one Ceph call: with usage_parallelism calls at once,
# a batch of REFRESH_BATCH images is spread over that many threads.
MAP_CHUNK = 32
Outcome = tuple[dict | None, dict | None]  # a volume's figure, or why it has none


class _Measurer:
    """Measures volumes from many threads: a chunk of one pool's images from their object maps (one Ceph call,
    no image opened), any other volume one per call. Once a cluster is unavailable, the rest of its volumes are
    skipped: each would otherwise wait out ROBIN_CEPH_TIMEOUT in turn."""

    def __init__(self):
        self.unavailable: dict[str, str] = {}

    def one(self, volume: Volume) -> tuple[list[Outcome], list[Volume]]:
        if volume.cluster.name in self.unavailable:
            return [self._failed(volume, f"skipped: {self.unavailable[volume.cluster.name]}")], []
        try:
            measured = _measure(volume)
        except CephUnavailable as exc:
            self.unavailable[volume.cluster.name] = exc.message
            return [self._failed(volume, exc.message)], []
        except (RobinError, CephError) as exc:  # one volume that cannot be measured must not cost the whole refresh
            return [self._failed(volume, exc.message)], []
        return [self._row(volume, measured)], []

    def images(self, images: list[RbdImage]) -> tuple[list[Outcome], list[Volume]]:
        """One pool's images from their object maps; returns the figures, and the images their maps do not
        measure, to be measured one by one (opened)."""
        cluster = images[0].cluster
        if cluster.name in self.unavailable:
            return [self._failed(image, f"skipped: {self.unavailable[cluster.name]}") for image in images], []
        try:
            measured, left = object_map.measure_images(clusters.connection(cluster), images[0].pool,
                                                       (image.name for image in images))
        except CephUnavailable as exc:
            self.unavailable[cluster.name] = exc.message
            return [self._failed(image, exc.message) for image in images], []
        except (RobinError, CephError):  # e.g. a pool gone: each image's own measurement says what is wrong
            return [], images
        left = set(left)
        return ([self._row(image, measured[image.name]) for image in images if image.name not in left],
                [image for image in images if image.name in left])

    @staticmethod
    def _row(volume: Volume, measured: rbd_ops.Measured) -> Outcome:
        return {"volume_id": volume.id, "used_bytes": measured.used_bytes, "method": measured.method,
                "measured_at": utcnow()}, None

    @staticmethod
    def _failed(volume: Volume, error: str) -> Outcome:
        return None, {"volume_id": volume.id, "name": volume.name, "cluster": volume.cluster.name, "error": error}


def _tasks(measurer: _Measurer, volumes: list[Volume]):
    """(function, argument, volumes it measures) for a batch: its images in chunks of one cluster's pool,
    its paths one by one."""
    pools = defaultdict(list)
    for volume in volumes:
        if isinstance(volume, RbdImage):
            pools[volume.cluster_id, volume.pool].append(volume)
        else:
            yield measurer.one, volume, 1
    for images in pools.values():
        for at in range(0, len(images), MAP_CHUNK):
            chunk = images[at:at + MAP_CHUNK]
            yield measurer.images, chunk, len(chunk)


# Volumes are read, measured and stored this many at a time, so a refresh's memory does not grow
# with the fleet.
REFRESH_BATCH = 500


def _to_measure(stale_after: timedelta | None, volume_ids, project_id: int | None):
    """Available volumes (others have no data to measure, or are being changed), optionally only the
    given ones, one project's, or those whose figure is missing or older than `stale_after`, in
    batches of REFRESH_BATCH in id order."""
    for model in (RbdImage, CephfsPath):
        query = select(model).where(model.state == VolumeState.AVAILABLE)
        if volume_ids is not None:
            query = query.where(model.id.in_(list(volume_ids)))
        if project_id is not None:
            query = query.where(model.project_id == project_id)
        if stale_after is not None:
            fresh = select(VolumeUsage.volume_id).where(VolumeUsage.measured_at >= utcnow() - stale_after)
            query = query.where(model.id.not_in(fresh))
        after = ""
        while True:
            with db.reading() as session:
                page = query.where(model.id > after).order_by(model.id).limit(REFRESH_BATCH)
                batch = list(session.scalars(page).unique())
            if not batch:
                break
            yield batch
            after = batch[-1].id


def refresh(*, stale_after: timedelta | None = None, volume_ids=None, project_id: int | None = None) -> RefreshResult:
    """Measure now, `usage_parallelism` Ceph calls at a time (a chunk of one pool's images from their object
    maps, or one volume), and store the figures REFRESH_BATCH at a time. The
    threads measure one batch ahead of the database: while a batch is read or the last figures are stored, they
    still have a batch to measure (waiting for each batch's slowest volume, then for the database, left them
    idle), and about two batches of volumes are held at a time."""
    started, result, measurer = time.monotonic(), RefreshResult(), _Measurer()
    measuring, rows = deque(), []  # (future, volumes it measures), in the order submitted

    def submit(task, argument, volumes: int) -> None:
        measuring.append((pool.submit(task, argument), volumes))

    def collect_oldest() -> int:
        nonlocal rows
        future, volumes = measuring.popleft()
        outcomes, left = future.result()
        for volume in left:  # images their object maps do not measure: opened, one per call
            submit(measurer.one, volume, 1)
        for outcome in outcomes:
            rows = _collect(outcome, rows, result)
        return volumes - len(left)

    with ThreadPoolExecutor(max_workers=config.current().usage_parallelism) as pool:
        in_flight = 0
        for volumes in _to_measure(stale_after, volume_ids, project_id):
            for task in _tasks(measurer, volumes):
                submit(*task)
            in_flight += len(volumes)
            while in_flight > REFRESH_BATCH:
                in_flight -= collect_oldest()
        while measuring:
            collect_oldest()
    if rows:
        _store(rows)
        result.measured += len(rows)
    if stale_after is None and volume_ids is None and project_id is None:
        _prune()
    # The history's sample of this refresh; the maintenance loop's refreshes, every round, one per MAX_AGE at most.
    history.record(min_spacing=stale_after or timedelta(0))
    result.seconds = time.monotonic() - started
    log.info("usage refreshed", extra={"measured": result.measured, "failed": len(result.failed),
                                       "seconds": round(result.seconds, 3)})
    return result


def _collect(measured: tuple[dict | None, dict | None], rows: list[dict], result: RefreshResult) -> list[dict]:
    """Add one volume's figure (or its failure); store the figures once there are REFRESH_BATCH of them.
    Returns the figures not stored yet."""
    row, error = measured
    if row is None:
        result.failed.append(error)
        return rows
    rows.append(row)
    if len(rows) < REFRESH_BATCH:
        return rows
    _store(rows)
    result.measured += len(rows)
    return []


def _store(rows: list[dict]) -> None:
    with db.unit_of_work() as session:
        upsert(session, VolumeUsage, VolumeUsage.volume_id, rows)


def _prune() -> None:
    """Drop the figures of volumes that are gone."""
    with db.unit_of_work() as session:
        live = union_all(*(select(m.id).where(m.state != VolumeState.DELETED) for m in (RbdImage, CephfsPath)))
        session.execute(delete(VolumeUsage).where(VolumeUsage.volume_id.not_in(live)))


# --- reading ------------------------------------------------------------------------------------

def _volume_rows(session) -> list[dict]:
    """Every live volume with its promised size and its last figure, in one query per kind."""
    snapshots = dict(session.execute(
        select(func.coalesce(Snapshot.rbd_image_id, Snapshot.cephfs_path_id), func.count())
        .where(Snapshot.state != SnapshotState.DELETED).group_by(Snapshot.rbd_image_id, Snapshot.cephfs_path_id)).all())
    rows = []
    for kind, model, location in (("rbd", RbdImage, RbdImage.pool), ("cephfs", CephfsPath, CephfsPath.fs_name)):
        query = (select(model.id, model.name, model.state, reserved_bytes(model), location, Project.name,
                        CephCluster.name, VolumeUsage.used_bytes, VolumeUsage.method, VolumeUsage.measured_at)
                 .join(Project, Project.id == model.project_id).join(CephCluster, CephCluster.id == model.cluster_id)
                 .outerjoin(VolumeUsage, VolumeUsage.volume_id == model.id).where(model.state != VolumeState.DELETED))
        for vid, name, state, size, where, project, cluster, used, method, measured_at in session.execute(query):
            rows.append({"id": vid, "kind": kind, "project": project, "cluster": cluster, "pool": where,
                         "name": name, "state": str(state), "provisioned_bytes": int(size), "used_bytes": used,
                         "method": method, "measured_at": measured_at, "snapshots": snapshots.get(vid, 0)})
    return rows


@dataclass(frozen=True)
class CachedUsage:
    """One project's used bytes as last measured: the sum over its measured live volumes."""
    used_bytes: int
    unmeasured_volumes: int  # live volumes with no figure yet: not in used_bytes
    oldest_measured_at: datetime | None  # the oldest figure in the sum; None when nothing is measured


def project_cached(session, project_id: int) -> CachedUsage:
    """From the usage table only, one query per kind: no Ceph call, whatever the project's size."""
    used, unmeasured, oldest = 0, 0, []
    for model in (RbdImage, CephfsPath):
        live, measured, total, first = session.execute(
            select(func.count(model.id), func.count(VolumeUsage.volume_id),
                   func.coalesce(func.sum(VolumeUsage.used_bytes), 0), func.min(VolumeUsage.measured_at))
            .outerjoin(VolumeUsage, VolumeUsage.volume_id == model.id)
            .where(model.project_id == project_id, model.state != VolumeState.DELETED)).one()
        used, unmeasured = used + int(total), unmeasured + live - measured
        oldest += [first] if first is not None else []
    return CachedUsage(used, unmeasured, min(oldest, default=None))


def thin_ratio(provisioned: int, used: int) -> float | None:
    """Provisioned / used: 4.0 means volumes were promised four times what they occupy. None when
    nothing is used yet (the ratio would be infinite)."""
    return round(provisioned / used, 2) if used else None


def _totals(rows: list[dict], key) -> dict:
    totals = defaultdict(lambda: {"provisioned_bytes": 0, "used_bytes": 0, "volumes": 0, "snapshots": 0,
                                  "unmeasured_volumes": 0, "oldest_measured_at": None})
    for row in rows:
        total = totals[key(row)]
        total["provisioned_bytes"] += row["provisioned_bytes"]
        total["volumes"] += 1
        total["snapshots"] += row["snapshots"]
        if row["used_bytes"] is None:
            total["unmeasured_volumes"] += 1
            continue
        total["used_bytes"] += row["used_bytes"]
        oldest = total["oldest_measured_at"]
        total["oldest_measured_at"] = min(oldest, row["measured_at"]) if oldest else row["measured_at"]
    for total in totals.values():
        total["thin_ratio"] = thin_ratio(total["provisioned_bytes"], total["used_bytes"])
    return totals


def _projects(session, rows: list[dict]) -> list[dict]:
    per_project = _totals(rows, lambda row: row["project"])
    quotas = session.execute(select(Project.name, Quota.max_bytes, Quota.max_volumes).join(Quota)
                             .order_by(Project.name)).all()
    return [{"project": name, "quota_bytes": max_bytes, "quota_volumes": max_volumes, **per_project[name]}
            for name, max_bytes, max_volumes in quotas]


def _pools(rows: list[dict]) -> list[dict]:
    per_pool = _totals(rows, lambda row: (row["cluster"], row["kind"], row["pool"]))
    return [{"cluster": cluster, "kind": kind, "pool": pool, **total}
            for (cluster, kind, pool), total in sorted(per_pool.items())]


def _clusters(session) -> list[dict]:
    """Capacity from `ceph df` per registered cluster; one that does not answer says why."""
    found = []
    for cluster in session.scalars(select(CephCluster).order_by(CephCluster.name)):
        try:
            found.append({"name": cluster.name, **clusters.connection(cluster).capacity(), "error": None})
        except (RobinError, CephError) as exc:
            found.append({"name": cluster.name, "total_bytes": None, "used_bytes": None, "avail_bytes": None,
                          "pools": [], "error": exc.message})
    return found


def _with_age(row: dict, now: datetime) -> dict:
    measured_at = row["measured_at"]
    return {**row, "age_seconds": round((now - measured_at).total_seconds(), 1) if measured_at else None}


def require_auditor(identity: Identity) -> None:
    if not identity.sees_all_projects:
        raise Forbidden("usage reports need an auditor or admin token", details={"role": identity.role.value})


def report(identity: Identity, *, refresh_now: bool = False, with_volumes: bool = False, top: int = 10) -> dict:
    """The usage report per cluster, pool, project and (with_volumes) volume, with the top consumers."""
    require_auditor(identity)
    refreshed = None
    if refresh_now:
        identity.require_admin()  # measuring thousands of volumes is an admin's call
        result = refresh()
        refreshed = {"measured": result.measured, "failed": result.failed, "seconds": round(result.seconds, 3)}
    now = utcnow()
    with db.reading() as session:
        rows = [_with_age(row, now) for row in _volume_rows(session)]
        body = {"generated_at": now, "refresh": refreshed, "clusters": _clusters(session),
                "pools": _pools(rows), "projects": _projects(session, rows)}
    measured = sorted((row for row in rows if row["used_bytes"] is not None), key=lambda row: -row["used_bytes"])
    body["top_consumers"] = measured[:top]
    body["volumes"] = sorted(rows, key=lambda row: (row["project"], row["kind"], row["name"])) if with_volumes else None
    return body


# --- totals for the metrics scrape ----------------------------------------------------------------

TOTAL_FIGURES = ("project_id", "cluster_id", "kind", "location", "provisioned_bytes", "used_bytes", "volumes")


def sum_totals(session) -> list[tuple]:
    """Every project's live volumes summed per cluster and pool (CephFS: file system), with their last
    figures, as TOTAL_FIGURES: one grouped query per kind, which scans every volume row (about 0.3 s at 100,000
    on SQLite)."""
    rows = []
    for kind, model, location in (("rbd", RbdImage, RbdImage.pool), ("cephfs", CephfsPath, CephfsPath.fs_name)):
        groups = (select(model.project_id, model.cluster_id, location, func.sum(reserved_bytes(model)),
                         func.coalesce(func.sum(VolumeUsage.used_bytes), 0), func.count(model.id))
                  .outerjoin(VolumeUsage, VolumeUsage.volume_id == model.id)
                  .where(model.state != VolumeState.DELETED)
                  .group_by(model.project_id, model.cluster_id, location))
        rows += [(project_id, cluster_id, kind, where, int(provisioned), int(used), volumes)
                 for project_id, cluster_id, where, provisioned, used, volumes in session.execute(groups)]
    return rows


def store_totals() -> int:
    """The maintenance leader's pass: sum every project's volumes per pool and store the totals for the
    scrape, replacing the last pass's in one transaction (a scrape sees one pass or the other, never a mix).
    Summed outside the write, so that writers on SQLite do not wait for the scan. Returns the rows stored."""
    summed_at = utcnow()
    with db.reading() as session:
        rows = [{**dict(zip(TOTAL_FIGURES, row, strict=True)), "summed_at": summed_at} for row in sum_totals(session)]
    with db.unit_of_work() as session:
        if not db.is_sqlite:
            # Two passes at once (a leader stepping down as the next takes over) would insert the same keys: the
            # second waits for the first. Plain reads, the scrape's, are not held up by this mode.
            session.execute(text("LOCK TABLE volume_totals IN EXCLUSIVE MODE"))
        session.execute(delete(VolumeTotal))
        if rows:
            session.execute(insert(VolumeTotal), rows)
    return len(rows)


def _stored_totals(connection) -> tuple[list[tuple], datetime | None]:
    summed_at = connection.scalar(select(func.min(VolumeTotal.summed_at)))
    return connection.execute(select(*(getattr(VolumeTotal, name) for name in TOTAL_FIGURES))).all(), summed_at


def _seconds_until(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else round(max(0.0, (at - now).total_seconds()), 3)


def scrape_rows() -> dict:
    """What the scrape reports of quotas and volumes, from the database only, in one read: every project's
    quota (read live: a new project shows at once), the totals the maintenance leader stored, with the
    time it summed them, and the seconds left until each project's stored forecast date (robin.audit.forecast).
    With no totals stored (no round yet since the start, the maintenance loop off, or no volumes at all) they are
    summed now, as the leader would."""
    with db.reading() as session:
        connection = session.connection()  # Core rows: a thousand projects' worth, read at every scrape
        quotas = connection.execute(select(Project.id, Project.name, Quota.max_bytes, Quota.max_volumes)
                                    .join(Quota)).all()
        cluster_names = dict(connection.execute(select(CephCluster.id, CephCluster.name)).all())
        totals, summed_at = _stored_totals(connection)
        full_at = forecast.stored_full_at(connection)
        if summed_at is None:
            totals, summed_at = sum_totals(session), utcnow()
    per_project, per_pool, now = {}, defaultdict(lambda: [0, 0, 0]), utcnow()
    for project_id, cluster_id, kind, location, provisioned, used, volumes in totals:
        pool = (cluster_names[cluster_id], kind, location)
        for figures in (per_project.setdefault(project_id, [0, 0, 0]), per_pool[pool]):
            figures[0] += provisioned
            figures[1] += used
            figures[2] += volumes
    projects = []
    for project_id, name, max_bytes, max_volumes in sorted(quotas, key=lambda quota: quota[1]):
        # A project without volumes has no used bytes to report, as before totals were stored.
        provisioned, used, volumes = per_project.get(project_id, (0, None, 0))
        projects.append({"project": name, "quota_bytes": max_bytes, "quota_volumes": max_volumes,
                         "provisioned_bytes": provisioned, "used_bytes": used, "volumes": volumes,
                         "quota_exhaustion_seconds": _seconds_until(full_at.get(project_id), now)})
    pools = [{"cluster": cluster, "kind": kind, "pool": pool, "provisioned_bytes": provisioned, "used_bytes": used,
              "volumes": volumes} for (cluster, kind, pool), (provisioned, used, volumes) in sorted(per_pool.items())]
    return {"projects": projects, "pools": pools, "summed_at": summed_at}
