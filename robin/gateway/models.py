from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from robin.db import Base, UTCDateTime, string_enum, utcnow


class VerifyState(enum.StrEnum):
    VERIFYING = "verifying"
    OK = "ok"
    FAILED = "failed"


class MountState(enum.StrEnum):
    """Where an activation stands between the API, which asks, and the gateway agent, which mounts."""

    PENDING = "pending"  # asked for: the agent mounts it
    MOUNTED = "mounted"  # the agent reported it mounted at mount_path
    FAILED = "failed"  # the agent could not mount it: mount_error_* say why
    UNMOUNTING = "unmounting"  # deactivated: logins refused, the agent unmounts, then removes the row


class GatewayAccount(Base):
    """The SFTP account of one activated volume: who may log in, with which password, rooted where.

    The row is also the gateway's instruction: `robin gateway` (another process, the node agent) mounts what is
    pending, unmounts what is unmounting, runs the checks asked for (verify_state `verifying`), and ends the live
    sessions of an account whose row disappears, becomes login-forbidden or names another mount path."""

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
    # Where the volume is mounted on the gateway's host: the root of every session of this account. Set by the
    # agent when it mounted the volume; None until then.
    mount_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    mount_state: Mapped[MountState] = mapped_column(string_enum(MountState, "mount_state"), default=MountState.PENDING)
    # The agent's last failure to mount or unmount: robin's error code, its HTTP status, its message.
    mount_error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mount_error_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mount_error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When the agent last reported on the mount (mounted, failed).
    mount_reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    login_forbidden: Mapped[bool] = mapped_column(Boolean, default=False)
    verify_state: Mapped[VerifyState | None] = mapped_column(string_enum(VerifyState, "verify_state"), nullable=True)
    verify_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When verify_state was set: the start of a check still `verifying` (so a stale one shows), else its end.
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
