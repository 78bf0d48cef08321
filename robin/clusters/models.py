from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from robin.db import Base, UTCDateTime, utcnow


class CephCluster(Base):
    __tablename__ = "ceph_clusters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    conf_path: Mapped[str] = mapped_column(String(1024))
    client_id: Mapped[str] = mapped_column(String(128), default="admin")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
