from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, Index, String, Text, case, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from robin.clusters.models import CephCluster
from robin.db import Base, UTCDateTime, utcnow
from robin.projects.models import Project


class VolumeState(enum.StrEnum):
    """Lifecycle. Ceph side effects happen between two commits, so a crash can leave a row in a
    transitional state (creating, resizing, deleting) that the reconciler finishes or undoes."""

    CREATING = "creating"
    AVAILABLE = "available"
    RESIZING = "resizing"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


TRANSITIONAL_STATES = (VolumeState.CREATING, VolumeState.RESIZING, VolumeState.DELETING)
LIVE = text("state != 'deleted'")


class RbdImage(Base):
    __tablename__ = "rbd_images"
    __table_args__ = (
        # The Ceph name is the external key: unique per (cluster, pool) among live rows, so a
        # deleted image's name can be used again.
        Index("uq_rbd_images_ceph_name", "cluster_id", "pool", "name", unique=True,
              sqlite_where=LIVE, postgresql_where=LIVE),
        # URLs name images by name within a project.
        Index("uq_rbd_images_project_name", "project_id", "name", unique=True,
              sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_rbd_images_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    cluster_id: Mapped[int] = mapped_column(ForeignKey("ceph_clusters.id"))
    pool: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # Set while resizing: the size being applied. Quota counts the larger of the two.
    target_size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    features: Mapped[list] = mapped_column(JSON, default=list)
    image_metadata: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    state: Mapped[VolumeState] = mapped_column(
        Enum(VolumeState, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
             create_constraint=True, name="volume_state"))
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    project: Mapped[Project] = relationship(lazy="joined", innerjoin=True)
    cluster: Mapped[CephCluster] = relationship(lazy="joined", innerjoin=True)

    @property
    def reserved_bytes(self) -> int:
        return max(self.size_bytes, self.target_size_bytes or 0)


# What a row holds against its project's quota: while resizing, the larger of the two sizes.
RESERVED_BYTES = case((RbdImage.target_size_bytes > RbdImage.size_bytes, RbdImage.target_size_bytes),
                      else_=RbdImage.size_bytes)
