from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from robin.db import Base, UTCDateTime, string_enum, utcnow
from robin.projects.models import Project


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything
    MEMBER = "member"  # one project's volumes, read and write
    AUDITOR = "auditor"  # read-only, every project
    METRICS = "metrics"  # /metrics only: what a Prometheus scrape needs, nothing else
    NODE = "node"  # a CSI node's: the cephx users it mounts CephFS paths with, nothing else


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # sha256 of the secret: tokens are 256 random bits, so a fast hash is enough (nothing to brute
    # force) and lets a request find its token by an indexed lookup.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[Role] = mapped_column(
        string_enum(Role, "token_role"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    project: Mapped[Project | None] = relationship(lazy="joined")


class DashboardSession(Base):
    """A person logged in to the dashboard (robin/ui) with a token. The browser's cookie holds a random
    session id; only its sha256 is kept, so a copy of this table logs nobody in."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
