"""Synthetic rows for measuring robin's reads at scale: projects with quotas, RBD images and CephFS paths (live,
in the trash, deleted), snapshots, API tokens, usage figures and audit events, written straight into a migrated
database. Nothing exists in Ceph: only what reads rows (listings, lookups, query plans) can use them.

Used by the query-plan test (tests/integration/test_query_plans.py) and the listing benchmark
(benchmarks/listing_at_scale.py), so both measure the same shape of fleet.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select

from robin.audit.models import AuditEvent, VolumeUsage
from robin.auth.models import ApiToken, Role
from robin.auth.service import hash_secret
from robin.clusters.models import CephCluster
from robin.projects.models import Project, Quota
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import CephfsPath, RbdImage, VolumeState

CHUNK = 2000  # rows per executemany
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Fleet:
    """How many rows of each kind. Three volumes in five are RBD images, the others CephFS paths; some are in
    the trash, some deleted (_state). The snapshots go round the live volumes, one each per
    round, each with a name of its own."""

    projects: int = 1000
    volumes: int = 100_000
    big_project_volumes: int = 0  # that many of the volumes go to one project, `big_project` (0: spread evenly)
    snapshots: int = 50_000
    tokens: int = 2000
    audit_events: int = 100_000
    # Names the fleet's projects, its cluster and its tokens' secrets: fleets of other prefixes share a database.
    prefix: str = "synthetic"

    @property
    def big_project(self) -> str:
        return f"{self.prefix}-big"

    def project(self, index: int) -> str:
        return f"{self.prefix}-{index:05d}"

    def token_secret(self, index: int) -> str:
        """A token's secret, so a test can look one up as a request would (each is a member of a project)."""
        return f"{self.prefix}-token-{index:06d}"


def volume_name(index: int) -> str:
    return f"vol-{index:06d}"


def populate(engine: Engine, fleet: Fleet) -> dict:
    """Write `fleet` into the migrated database behind `engine`; returns what a caller needs to address it: the
    cluster's id, the projects' ids by name, and a few volume names per kind."""
    with engine.begin() as connection:
        cluster_id = _cluster(connection, fleet.prefix)
        project_ids = _projects(connection, fleet)
        owners = _owners(fleet, project_ids)
        rbd_ids, cephfs_ids = _volumes(connection, cluster_id, owners)
        _snapshots(connection, fleet, rbd_ids, cephfs_ids)
        _tokens(connection, fleet, project_ids)
        _usage(connection, rbd_ids + cephfs_ids)
        _audit(connection, fleet)
    return {"cluster_id": cluster_id, "project_ids": project_ids}


def _chunks(rows: list[dict]):
    for start in range(0, len(rows), CHUNK):
        yield rows[start:start + CHUNK]


def _insert(connection, model, rows: list[dict]) -> None:
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        _copy(connection, model.__table__.name, rows)
        return
    for chunk in _chunks(rows):
        connection.execute(insert(model.__table__), chunk)


def _copy(connection, table: str, rows: list[dict]) -> None:
    """PostgreSQL's COPY, in the caller's transaction: a few times faster than INSERTs for 100,000 rows."""
    columns = list(rows[0])
    with connection.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(value) if isinstance(value, dict | list) else value
                                for value in (row[column] for column in columns)])


def _cluster(connection, name: str) -> int:
    """A cluster of the fleet's own (volume names are unique per cluster and pool)."""
    return connection.execute(insert(CephCluster.__table__).values(
        name=name, conf_path="/nonexistent/synthetic.conf", client_id="admin", is_default=False,
        created_at=EPOCH).returning(CephCluster.id)).scalar_one()


def _projects(connection, fleet: Fleet) -> dict[str, int]:
    names = [fleet.project(i) for i in range(fleet.projects)]
    if fleet.big_project_volumes:
        names.append(fleet.big_project)
    _insert(connection, Project, [{"name": name, "created_at": EPOCH} for name in names])
    ids = dict(connection.execute(select(Project.name, Project.id).where(Project.name.in_(names))).all())
    huge = 2**60
    _insert(connection, Quota, [{"project_id": ids[name], "max_bytes": huge, "max_volumes": 2**31 - 1,
                                 "max_snapshots": 2**31 - 1, "updated_at": EPOCH} for name in names])
    return ids


def _owners(fleet: Fleet, project_ids: dict[str, int]) -> list[int]:
    """The project of each volume, by index: the big project's first, then the others round robin, five volumes
    at a time (so each gets volumes of both kinds and states)."""
    spread = [project_ids[fleet.project(i)] for i in range(fleet.projects)]
    big = [project_ids[fleet.big_project]] * fleet.big_project_volumes if fleet.big_project_volumes else []
    return big + [spread[(i // 5) % len(spread)] for i in range(fleet.volumes - len(big))]


def _state(index: int) -> dict:
    """About one volume in eleven deleted and purged, one in seven in the trash, the rest available (periods
    prime to the kinds' five, so both kinds have some of each)."""
    at = EPOCH + timedelta(seconds=index)
    if index % 11 == 10:
        return {"state": VolumeState.DELETED.value, "deleted_at": at, "purged_at": at, "trash_ref": None}
    if index % 7 == 6:
        return {"state": VolumeState.DELETED.value, "deleted_at": at, "purge_after": at + timedelta(days=3650),
                "trash_ref": f"trash-{index}"}
    return {"state": VolumeState.AVAILABLE.value}


def _volumes(connection, cluster_id: int, owners: list[int]) -> tuple[list, list]:
    rbd, cephfs = [], []
    for index, project_id in enumerate(owners):
        at = EPOCH + timedelta(seconds=index)
        common = {"id": str(uuid.uuid4()), "project_id": project_id, "cluster_id": cluster_id,
                  "name": volume_name(index), "created_at": at, "updated_at": at, "deleted_at": None,
                  "purge_after": None, "purged_at": None, "trash_ref": None, "error_message": None,
                  "created_for": f"csi:{volume_name(index)}" if index % 3 == 0 else None, **_state(index)}
        if index % 5 < 3:
            rbd.append({**common, "pool": "rbd", "size_bytes": 2**30, "target_size_bytes": None,
                        "features": ["layering", "exclusive-lock"], "metadata": {"owner": "synthetic"},
                        "parent_id": None, "parent_snapshot": None, "rollback_snapshot": None})
        else:
            cephfs.append({**common, "fs_name": "cephfs", "path": f"/volumes/p{project_id}/{volume_name(index)}",
                           "quota_bytes": 2**30, "target_quota_bytes": None})
    _insert(connection, RbdImage, rbd)
    _insert(connection, CephfsPath, cephfs)
    return ([(row["id"], row["project_id"], row["state"]) for row in rbd],
            [(row["id"], row["project_id"], row["state"]) for row in cephfs])


def _snapshots(connection, fleet: Fleet, rbd_ids: list, cephfs_ids: list) -> None:
    live = [(column, volume_id, project_id) for column, ids in (("rbd_image_id", rbd_ids),
                                                                ("cephfs_path_id", cephfs_ids))
            for volume_id, project_id, state in ids if state != VolumeState.DELETED.value]
    rows = []
    for index in range(min(fleet.snapshots, len(live) * 4)):
        column, volume_id, project_id = live[index % len(live)]
        at = EPOCH + timedelta(seconds=index)
        rows.append({"id": str(uuid.uuid4()), "project_id": project_id, "rbd_image_id": None,
                     "cephfs_path_id": None, column: volume_id, "name": f"snap-{index // len(live)}-{index}",
                     "size_bytes": 2**30, "state": SnapshotState.AVAILABLE.value, "error_message": None,
                     "created_at": at, "updated_at": at, "deleted_at": None})
    _insert(connection, Snapshot, rows)


def _tokens(connection, fleet: Fleet, project_ids: dict[str, int]) -> None:
    ids = list(project_ids.values())
    _insert(connection, ApiToken, [
        {"name": f"{fleet.prefix}-{i}", "token_hash": hash_secret(fleet.token_secret(i)),
         "prefix": fleet.token_secret(i)[:16], "role": Role.MEMBER.value, "project_id": ids[i % len(ids)],
         "created_at": EPOCH, "revoked_at": None, "expires_at": None} for i in range(fleet.tokens)])


def _usage(connection, volumes: list) -> None:
    _insert(connection, VolumeUsage, [{"volume_id": volume_id, "used_bytes": 2**20, "method": "fast-diff",
                                       "measured_at": EPOCH} for volume_id, _, state in volumes
                                      if state != VolumeState.DELETED.value])


def _audit(connection, fleet: Fleet) -> None:
    _insert(connection, AuditEvent, [
        {"at": EPOCH + timedelta(seconds=i), "actor": f"token:{fleet.prefix}", "action": "rbd-images.post",
         "target": f"/api/v2/projects/{fleet.project(i % fleet.projects)}/rbd-images", "outcome": "success",
         "project": fleet.project(i % fleet.projects), "status_code": 201, "error_code": None,
         "request_id": str(uuid.uuid4()), "details": {}} for i in range(fleet.audit_events)])
