from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from robin.db import Base, UTCDateTime, utcnow


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    quota: Mapped[Quota] = relationship(back_populates="project", lazy="joined", cascade="all, delete-orphan")


class Quota(Base):
    """One row per project. Its row lock serialises every reservation against the project.

    Usage is never stored here: it is summed from the rows that consume it, so it cannot drift.
    """

    __tablename__ = "quotas"
    __table_args__ = (
        CheckConstraint("max_bytes >= 0 AND max_volumes >= 0 AND max_snapshots >= 0", name="quota_non_negative"),
    )

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    max_bytes: Mapped[int] = mapped_column(BigInteger)
    max_volumes: Mapped[int] = mapped_column(Integer)
    max_snapshots: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    project: Mapped[Project] = relationship(back_populates="quota")
