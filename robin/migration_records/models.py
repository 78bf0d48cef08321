from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from robin.db import Base, UTCDateTime, utcnow


class MigrationRecord(Base):
    """One step of one volume's migration off GlusterFS, as the migration tool reported it: `started` claims the
    destination name for its source (a rerun resumes only into a volume started for the same source), then
    `verified`, `mismatched` or `failed`, then `cut-over` and `finalized` for Kubernetes volumes. The request that
    writes it is audited like every other. Every run of the tool starts with a `started` record naming the run:
    while it is the destination's latest record, the run holds the destination and no other run may start."""

    __tablename__ = "migration_records"
    __table_args__ = (Index("ix_migration_records_volume", "project_id", "volume_kind", "volume_name"),)

    # Time-ordered (the time, then a random suffix), so the keyset pages come in the order they happened.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(160))
    source: Mapped[str] = mapped_column(Text)
    volume_kind: Mapped[str] = mapped_column(String(8))
    volume_name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    run: Mapped[str | None] = mapped_column(String(64), nullable=True)
    report: Mapped[dict] = mapped_column(JSON, default=dict)
