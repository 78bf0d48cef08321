from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from robin import crypto
from robin.db import Base, UTCDateTime, utcnow


class CephCluster(Base):
    """How to reach a cluster: a ceph.conf on robin's hosts (and optionally a keyring path), or
    monitor addresses and a cephx key kept here, encrypted (robin.crypto). The key is never returned by the API."""

    __tablename__ = "ceph_clusters"
    __table_args__ = (
        CheckConstraint("conf_path IS NOT NULL OR (mon_host IS NOT NULL AND cephx_key IS NOT NULL)",
                        name="cluster_reachable_somehow"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    conf_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    keyring_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    mon_host: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # Encrypted with robin's secret key: only `access` decrypts it, when a connection is made.
    cephx_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    client_id: Mapped[str] = mapped_column(String(128), default="admin")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def access(self) -> dict:
        """What a connection needs, as a hashable description (a change makes a new connection)."""
        key = crypto.decrypt(self.cephx_key, f"the key of cluster {self.name!r}") if self.cephx_key else None
        return {"conf_path": self.conf_path, "keyring_path": self.keyring_path, "mon_host": self.mon_host,
                "cephx_key": key, "client_id": self.client_id}
