from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from robin.db import Base, UTCDateTime, string_enum, utcnow


class VerifyState(enum.StrEnum):
    VERIFYING = "verifying"
    OK = "ok"
    FAILED = "failed"


class GatewayAccount(Base):
    """The SFTP account of one activated volume: who may log in, with which password, rooted where.

    The row is also the gateway's instruction: `robin gateway` (another process) ends the live sessions of
    an account whose row disappears, becomes login-forbidden or names another mount path."""

    __tablename__ = "gateway_accounts"
    __table_args__ = (
        CheckConstraint("(rbd_image_id IS NULL) <> (cephfs_path_id IS NULL)", name="account_of_one_volume"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Two foreign keys, exactly one set (as snapshots do): each references its table for real, and
    # `unique` makes one account per volume.
    rbd_image_id: Mapped[str | None] = mapped_column(ForeignKey("rbd_images.id"), unique=True, nullable=True)
    cephfs_path_id: Mapped[str | None] = mapped_column(ForeignKey("cephfs_paths.id"), unique=True, nullable=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    # scrypt$n$r$p$salt$hash (robin.gateway.passwords): people choose these, so a slow salted hash.
    password_hash: Mapped[str] = mapped_column(String(255))
    # Where the volume is mounted on the gateway's host: the root of every session of this account.
    mount_path: Mapped[str] = mapped_column(String(1024))
    login_forbidden: Mapped[bool] = mapped_column(Boolean, default=False)
    verify_state: Mapped[VerifyState | None] = mapped_column(string_enum(VerifyState, "verify_state"), nullable=True)
    verify_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When verify_state was set: the start of a check still `verifying` (so a stale one shows), else its end.
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
