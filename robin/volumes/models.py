from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, case, select, text
from sqlalchemy.orm import Mapped, aliased, column_property, declared_attr, mapped_column, relationship

from robin.clusters.models import CephCluster
from robin.db import Base, UTCDateTime, string_enum, utcnow
from robin.projects.models import Project


class VolumeState(enum.StrEnum):
    """Lifecycle. Ceph side effects happen between two commits, so a crash can leave a row in a
    transitional state (creating, resizing, rolling_back, flattening, deleting) that the reconciler
    finishes or undoes. Every change of state is a compare-and-set on the state the writer saw."""

    CREATING = "creating"
    AVAILABLE = "available"
    RESIZING = "resizing"
    # An RBD image being rolled back to the snapshot named in rollback_snapshot: its blocks are the
    # old ones, the snapshot's, or a mix, so only rolling back again finishes it (never a bare resize).
    ROLLING_BACK = "rolling_back"
    FLATTENING = "flattening"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


LIVE = text("state != 'deleted'")
# A volume in the trash, restorable until purge_after (robin.volumes.listing.in_trash).
IN_TRASH = text("state = 'deleted' AND purged_at IS NULL AND trash_ref IS NOT NULL")
# A subvolume deleted to the trash and not yet purged from Ceph (a purge clears trash_ref once it is gone): it keeps
# its name, and its RADOS namespace, in Ceph until then.
TRASHED_SUBVOLUME = text("state = 'deleted' AND trash_ref IS NOT NULL AND layout = 'subvolume'")


def _live_unique(table: str, suffix: str, *columns: str) -> Index:
    # Unique among live rows only, so a deleted volume's name can be used again.
    return Index(f"uq_{table}_{suffix}", *columns, unique=True, sqlite_where=LIVE, postgresql_where=LIVE)


def _usage_index(table: str, size: str, target_size: str) -> Index:
    # What a project's live rows hold against its quota (robin.projects.service.provisioned), read on every
    # reservation under the project's lock: from the index alone, no row visited (a project of 10,000 volumes). The
    # state is in it too: SQLite checks the query's own condition on it rather than trusting the index's.
    return Index(f"ix_{table}_live_usage", "project_id", "state", size, target_size, sqlite_where=LIVE,
                 postgresql_where=LIVE)


def _trash_index(table: str) -> Index:
    # A project's trash by name (its listing, a restore): deleted rows pile up for good, the trash stays small.
    return Index(f"ix_{table}_trash", "project_id", "name", sqlite_where=IN_TRASH, postgresql_where=IN_TRASH)


class Volume:
    """What RBD images and CephFS paths share: ownership, the promised size and the lifecycle."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    cluster_id: Mapped[int] = mapped_column(ForeignKey("ceph_clusters.id"))
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[VolumeState] = mapped_column(
        string_enum(VolumeState, "volume_state"))
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Deferred deletion: a deleted volume waits in the trash until purge_after, then is purged.
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Where the trash keeps it: the RBD trash id, or the CephFS trash directory.
    trash_ref: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # What the volume was made for, as its creator said at creation (the provisioner: "k8s-claim:<claim uid>",
    # the CSI controller: "csi:<request name>"); never changed afterwards. Those programs act on a volume of a
    # name (adopt it on a retry, delete it with its claim) only when it was made for what they act for, so that
    # nothing a Kubernetes user writes can make them take another's volume.
    created_for: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Each kind declares size_bytes and target_size_bytes (set while resizing): their column
    # names differ, since a CephFS path's size is its quota.

    @declared_attr
    def project(cls) -> Mapped[Project]:
        return relationship(lazy="joined", innerjoin=True)

    @declared_attr
    def cluster(cls) -> Mapped[CephCluster]:
        return relationship(lazy="joined", innerjoin=True)

    @property
    def reserved_bytes(self) -> int:
        """What the row holds against its project's quota: while resizing, the larger size."""
        return max(self.size_bytes, self.target_size_bytes or 0)


class RbdImage(Volume, Base):
    __tablename__ = "rbd_images"
    __table_args__ = (
        # The Ceph name is the external key: unique per (cluster, pool).
        _live_unique("rbd_images", "ceph_name", "cluster_id", "pool", "name"),
        # URLs name images by name within a project.
        _live_unique("rbd_images", "project_name", "project_id", "name"),
        Index("ix_rbd_images_state", "state"),
        _usage_index("rbd_images", "size_bytes", "target_size_bytes"),
        _trash_index("rbd_images"),
        # A parent's clones (a delete is refused while it has some): only clones have a parent.
        Index("ix_rbd_images_parent_id", "parent_id", sqlite_where=text("parent_id IS NOT NULL"),
              postgresql_where=text("parent_id IS NOT NULL")),
    )

    pool: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    target_size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    features: Mapped[list] = mapped_column(JSON, default=list)
    image_metadata: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    # A clone's parent: the image and the snapshot it was cloned from, until it is flattened.
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("rbd_images.id", name="fk_rbd_images_parent_id"),
                                                  nullable=True)
    parent_snapshot: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # While rolling_back: the snapshot the image is being rolled back to.
    rollback_snapshot: Mapped[str | None] = mapped_column(String(128), nullable=True)


class CephfsPath(Volume, Base):
    """A directory <root>/<project>/<name> in a CephFS file system with ceph.quota.max_bytes set, or a mgr
    subvolume <name> in subvolume group <project>. Its size is its quota: what a pod may write, and what the
    project's quota counts."""

    __tablename__ = "cephfs_paths"
    __table_args__ = (
        # The last path component is the external key: unique per (cluster, file system).
        _live_unique("cephfs_paths", "ceph_name", "cluster_id", "fs_name", "name"),
        _live_unique("cephfs_paths", "project_name", "project_id", "name"),
        Index("ix_cephfs_paths_state", "state"),
        _usage_index("cephfs_paths", "quota_bytes", "target_quota_bytes"),
        _trash_index("cephfs_paths"),
        # The names the trash's subvolumes still hold on each file system (a subvolume's create checks its own).
        Index("ix_cephfs_paths_trashed_subvolumes", "cluster_id", "fs_name", "name",
              sqlite_where=TRASHED_SUBVOLUME, postgresql_where=TRASHED_SUBVOLUME),
        # A source's clones under way (a delete is refused while it has some): only those rows have one.
        Index("ix_cephfs_paths_clone_of", "clone_of", sqlite_where=text("clone_of IS NOT NULL"),
              postgresql_where=text("clone_of IS NOT NULL")),
    )

    fs_name: Mapped[str] = mapped_column(String(128))
    # "directory" or "subvolume" (robin.config.CEPHFS_LAYOUTS): how the volume is held, fixed at its creation.
    layout: Mapped[str] = mapped_column(String(16), default="directory", server_default="directory")
    # A subvolume's group: its project's name, or the group an adopted one was found in (ceph-csi's "csi").
    subvolume_group: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # While the mgr copies a clone into the subvolume (state creating): the path and snapshot it is cloned from.
    clone_of: Mapped[str | None] = mapped_column(ForeignKey("cephfs_paths.id", name="fk_cephfs_paths_clone_of"),
                                                 nullable=True)
    clone_snapshot: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The directory, or the path `fs subvolume getpath` gives (a subvolume's data directory).
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column("quota_bytes", BigInteger)
    target_size_bytes: Mapped[int | None] = mapped_column("target_quota_bytes", BigInteger, nullable=True)


# The parent's name, read with the row by a correlated subquery (a joined parent would drag its
# project and cluster into every image query).
_parent = aliased(RbdImage)
RbdImage.parent_name = column_property(
    select(_parent.name).where(_parent.id == RbdImage.parent_id).correlate_except(_parent).scalar_subquery())

VOLUME_MODELS = (RbdImage, CephfsPath)


def reserved_bytes(model: type[Volume]):
    """SQL for Volume.reserved_bytes, to sum a project's usage in the database."""
    return case((model.target_size_bytes > model.size_bytes, model.target_size_bytes), else_=model.size_bytes)
