from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from robin.db import Base, UTCDateTime, string_enum, utcnow
from robin.volumes.models import LIVE, CephfsPath, RbdImage


class SnapshotState(enum.StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


class Snapshot(Base):
    """A snapshot of exactly one volume: an RBD snapshot, or a CephFS `.snap/<name>` directory."""

    __tablename__ = "snapshots"
    __table_args__ = (
        CheckConstraint("(rbd_image_id IS NULL) <> (cephfs_path_id IS NULL)", name="snapshot_of_one_volume"),
        Index("uq_snapshots_rbd_name", "rbd_image_id", "name", unique=True, sqlite_where=LIVE,
              postgresql_where=LIVE),
        Index("uq_snapshots_cephfs_name", "cephfs_path_id", "name", unique=True, sqlite_where=LIVE,
              postgresql_where=LIVE),
        Index("ix_snapshots_project_state", "project_id", "state"),
        # A project's snapshots of a name across its volumes (GET /api/v2/snapshots?project=&name=, the CSI
        # driver's check that a snapshot name is not taken): an index lookup whatever the project's size.
        Index("ix_snapshots_project_name", "project_id", "name"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    # The project is denormalised from the volume so max_snapshots is one indexed count.
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    rbd_image_id: Mapped[str | None] = mapped_column(ForeignKey("rbd_images.id"), nullable=True)
    cephfs_path_id: Mapped[str | None] = mapped_column(ForeignKey("cephfs_paths.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(128))
    # The volume's size (or quota) when the snapshot was taken.
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[SnapshotState] = mapped_column(
        string_enum(SnapshotState, "snapshot_state"))
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    rbd_image: Mapped[RbdImage | None] = relationship(lazy="joined")
    cephfs_path: Mapped[CephfsPath | None] = relationship(lazy="joined")

    @property
    def volume(self) -> RbdImage | CephfsPath:
        # By the foreign key: only the set relationship is loaded on a snapshot made in this process.
        return self.rbd_image if self.rbd_image_id is not None else self.cephfs_path
