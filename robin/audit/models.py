from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from robin.db import Base, UTCDateTime, db, utcnow

CHUNK = 500  # rows per INSERT (4 parameters each): SQLite allows 32766 parameters, PostgreSQL 65535
# A uuid's length: robin's own request ids, and the longest a client's X-Request-Id may be (robin.log).
REQUEST_ID_LENGTH = 36


class AuditEvent(Base):
    """Who did what to which target, and how it ended. Written for every mutating request."""

    __tablename__ = "audit_events"
    # Each filter of GET /api/v2/audit/events, newest first (robin.audit.events); on PostgreSQL also the path's
    # segments and a create's name, for the target filter, through functions that never fail (migration 0018).
    __table_args__ = (Index("ix_audit_events_at", "at"), Index("ix_audit_events_project", "project"),
                      Index("ix_audit_events_actor", "actor", "id"), Index("ix_audit_events_action", "action", "id"),
                      Index("ix_audit_events_outcome", "outcome", "id"),
                      Index("ix_audit_events_path_segments", text("robin_audit_path_segments(target)"),
                            postgresql_using="gin", postgresql_with={"fastupdate": "off"})
                      .ddl_if(dialect="postgresql"),
                      Index("ix_audit_events_created_name", text("robin_audit_created_name(details)"))
                      .ddl_if(dialect="postgresql"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(160))
    target: Mapped[str] = mapped_column(Text)
    project: Mapped[str | None] = mapped_column(String(63), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH))
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class VolumeUsage(Base):
    """The last measurement of a volume's used bytes: shared by every worker, the CLI and the metrics
    scrape, so a report reads a table instead of asking Ceph about thousands of volumes."""

    __tablename__ = "volume_usage"

    # An RBD image's or CephFS path's id (uuids, unique across both tables).
    volume_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    used_bytes: Mapped[int] = mapped_column(BigInteger)
    # fast-diff | full-scan (object map invalid) | full-scan (no object map) | rbytes
    method: Mapped[str] = mapped_column(String(40))
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VolumeTotal(Base):
    """One project's live volumes in one pool (or CephFS file system) of one cluster, summed: what the
    metrics scrape reports, so that it reads a row per project and pool instead of summing every volume.
    Written by the maintenance leader each round (robin.audit.usage.store_totals); quota checks never
    read it, they sum the rows under the project's lock."""

    __tablename__ = "volume_totals"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("ceph_clusters.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # rbd | cephfs
    location: Mapped[str] = mapped_column(String(128), primary_key=True)  # the pool, or the CephFS file system
    provisioned_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger)  # of the measured volumes (robin.audit.usage)
    volumes: Mapped[int] = mapped_column(Integer)
    summed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DriftCount(Base):
    """The last drift survey's findings of one kind, and when that survey ran: the metrics scrape reads
    these rows (every worker and replica alike) instead of surveying Ceph itself."""

    __tablename__ = "drift_counts"

    kind: Mapped[str] = mapped_column(String(64), primary_key=True)  # one of robin.audit.drift.KINDS
    findings: Mapped[int] = mapped_column(Integer)
    surveyed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DriftImageCheck(Base):
    """What the drift survey last found by opening an RBD image, and the signature of the image's header
    then: while the header reads the same, a survey takes the image's details from here instead of
    opening it again (robin.audit.drift)."""

    __tablename__ = "drift_image_checks"

    cluster_id: Mapped[int] = mapped_column(ForeignKey("ceph_clusters.id", ondelete="CASCADE"), primary_key=True)
    pool: Mapped[str] = mapped_column(String(128), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # librbd's id: stays across renames
    signature: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: the header was unreadable
    details: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # None: gone when opened
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClusterProbe(Base):
    """The last health probe of a registered cluster, recorded by the maintenance loop: the metrics
    scrape reads it (robin_ceph_cluster_up) and never probes Ceph itself."""

    __tablename__ = "cluster_probes"

    cluster_id: Mapped[int] = mapped_column(ForeignKey("ceph_clusters.id", ondelete="CASCADE"), primary_key=True)
    up: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)  # "ok", or "unavailable: <why>"
    probed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ProjectUsageSample(Base):
    """One project's usage at one moment (robin.audit.history): a raw sample appended by a usage refresh (step 0),
    or the mean of the samples of the hour (3600) or day (86400) starting at `at`, kept longer."""

    __tablename__ = "project_usage_samples"
    __table_args__ = (Index("ix_project_usage_samples_step_at", "step", "at"),)  # the downsampling's scan
    SERIES: ClassVar[tuple[str, ...]] = ("project_id",)
    MEANS: ClassVar[tuple[str, ...]] = ("provisioned_bytes", "used_bytes", "volumes")
    LASTS: ClassVar[tuple[str, ...]] = ("quota_bytes",)

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    provisioned_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger)  # of the measured volumes, as in volume_totals
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    volumes: Mapped[int] = mapped_column(Integer)


class PoolUsageSample(Base):
    """All projects' usage of one pool (or CephFS file system) of one cluster at one moment; steps as in
    ProjectUsageSample."""

    __tablename__ = "pool_usage_samples"
    __table_args__ = (Index("ix_pool_usage_samples_step_at", "step", "at"),)
    SERIES: ClassVar[tuple[str, ...]] = ("cluster_id", "kind", "location")
    MEANS: ClassVar[tuple[str, ...]] = ("provisioned_bytes", "used_bytes", "volumes")
    LASTS: ClassVar[tuple[str, ...]] = ()

    cluster_id: Mapped[int] = mapped_column(ForeignKey("ceph_clusters.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # rbd | cephfs
    location: Mapped[str] = mapped_column(String(128), primary_key=True)  # the pool, or the CephFS file system
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    provisioned_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger)
    volumes: Mapped[int] = mapped_column(Integer)


class UsageForecast(Base):
    """When a project's provisioned and used bytes reach its quota at their current growth rate, as last fitted
    (robin.audit.forecast, after each sampling): the metrics scrape reads these rows instead of fitting the
    samples itself. None: never at that rate (see GET /api/v2/audit/usage/forecast for why)."""

    __tablename__ = "usage_forecasts"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    provisioned_full_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    used_full_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


def upsert(session: Session, model, key, rows: list[dict]) -> None:
    """Insert the rows, or update those whose `key` (a column, or a tuple of them) exists: two writers (the
    maintenance loop and an admin's request, say) may store the same figures at once, which a
    delete-then-insert would turn into a conflict."""
    dialect = sqlite if db.is_sqlite else postgresql
    keys = key if isinstance(key, tuple) else (key,)
    for start in range(0, len(rows), CHUNK):
        statement = dialect.insert(model).values(rows[start:start + CHUNK])
        changing = [column for column in rows[0] if column not in {k.key for k in keys}]
        session.execute(statement.on_conflict_do_update(
            index_elements=list(keys), set_={column: statement.excluded[column] for column in changing}))


def still_there(session, rows, key: str, ids) -> list[dict]:
    """The rows whose project (or cluster) still exists, read in the writing transaction: one deleted since
    the sum would refuse the whole insert."""
    existing = set(session.scalars(select(ids)))
    return [row for row in rows if row[key] in existing]
