"""Gateway accounts: one per activated volume, created, checked, forbidden and removed here.

`robin gateway` only reads these rows (but for re-hashing a password made with older scrypt parameters at
its next login); the API process changes them, and the gateway ends the live sessions of an account whose
row was removed, forbidden, or given another mount path (see sessions.py).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from robin.db import db, utcnow
from robin.errors import Conflict, InvalidInput, NotFound
from robin.gateway.models import GatewayAccount, VerifyState
from robin.gateway.passwords import MAX_PASSWORD_BYTES, burn_time, hash_password, needs_rehash, verify_password
from robin.volumes.models import CephfsPath, RbdImage

# What a POSIX login name may be (useradd's default rule), at most 32 characters.
USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class Login:
    """What the gateway needs of an account once its password was checked."""

    username: str
    mount_path: str
    login_forbidden: bool = False


def _fk(volume: RbdImage | CephfsPath) -> str:
    return "rbd_image_id" if isinstance(volume, RbdImage) else "cephfs_path_id"


def _of_volume(volume: RbdImage | CephfsPath):
    return select(GatewayAccount).where(getattr(GatewayAccount, _fk(volume)) == volume.id)


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", details={"fields": {field: [message]}})


def validate_account(username: str, password: str, mount_path: str = "/mnt") -> None:
    """Check a user name and password (and mount path) before anything is mounted for them."""
    if not USERNAME.fullmatch(username):
        raise _invalid("user", "must be 1-32 of a-z 0-9 _ . -, starting with a letter or _")
    if not password or len(password.encode()) > MAX_PASSWORD_BYTES:
        raise _invalid("password", f"must be 1-{MAX_PASSWORD_BYTES} bytes")
    if not os.path.isabs(mount_path) or os.path.normpath(mount_path) != mount_path or mount_path == "/":
        raise _invalid("mount_path", "must be a normalised absolute directory other than /")


def activate(volume: RbdImage | CephfsPath, username: str, password: str, mount_path: str) -> GatewayAccount:
    """Create the volume's account, or replace its user, password and mount path; login is allowed again.
    A username another volume's account has is a 409 `username_taken`."""
    validate_account(username, password, mount_path)
    password_hash = hash_password(password)  # ~50 ms: before the transaction, not while holding its lock
    try:
        with db.unit_of_work() as session:
            account = session.scalar(_of_volume(volume))
            holder = session.scalar(select(GatewayAccount).where(GatewayAccount.username == username))
            if holder is not None and holder is not account:
                raise _username_taken(username)
            if account is None:
                account = GatewayAccount(**{_fk(volume): volume.id})
                session.add(account)
            account.username, account.password_hash, account.mount_path = username, password_hash, mount_path
            account.login_forbidden = False
    except IntegrityError as exc:  # PostgreSQL: a concurrent activation took the username first
        raise _username_taken(username) from exc
    return account


def _username_taken(username: str) -> Conflict:
    return Conflict(f"the gateway user {username!r} belongs to another volume", code="username_taken",
                    details={"user": username})


def account_of(volume: RbdImage | CephfsPath) -> GatewayAccount | None:
    with db.reading() as session:
        return session.scalar(_of_volume(volume))


def find(username: str) -> GatewayAccount | None:
    with db.reading() as session:
        return session.scalar(select(GatewayAccount).where(GatewayAccount.username == username))


def check_login(username: str, password: str) -> Login | None:
    """The account if the password is right (login may still be forbidden), else None, without saying whether
    the user exists. A hash made with older scrypt parameters is replaced by one with today's.
    Slow on purpose (scrypt): call it off an event loop."""
    account = find(username)
    if account is None:
        burn_time(password)
        return None
    if not verify_password(password, account.password_hash):
        return None
    if needs_rehash(account.password_hash):
        _rehash(account, password)
    return Login(account.username, account.mount_path, account.login_forbidden)


def _rehash(account: GatewayAccount, password: str) -> None:
    fresh = hash_password(password)  # before the transaction, as in activate()
    # Compare-and-set: a password changed meanwhile (a new activation) is never overwritten with the old one.
    with db.unit_of_work() as session:
        session.execute(update(GatewayAccount)
                        .where(GatewayAccount.id == account.id, GatewayAccount.password_hash == account.password_hash)
                        .values(password_hash=fresh))


def forbid_login(volume: RbdImage | CephfsPath) -> GatewayAccount:
    """Refuse new logins and (through the gateway's watcher) end the live sessions, until activated again."""
    with db.unit_of_work() as session:
        account = session.scalar(_of_volume(volume))
        if account is None:
            raise NotFound(f"volume {volume.name!r} is not activated", code="account_not_found")
        account.login_forbidden = True
    return account


def remove(volume: RbdImage | CephfsPath) -> bool:
    """Remove the volume's account (its sessions end); False when it had none."""
    with db.unit_of_work() as session:
        account = session.scalar(_of_volume(volume))
        if account is not None:
            session.delete(account)
        return account is not None


def start_verify(volume: RbdImage | CephfsPath, stale_after: timedelta) -> GatewayAccount:
    """Mark the account `verifying` from now on; a 409 while a check that is not stale runs."""
    with db.unit_of_work() as session:
        account = session.scalar(_of_volume(volume))
        if account is None:
            raise NotFound(f"volume {volume.name!r} is not activated: activate it, then verify",
                           code="account_not_found")
        if account.verify_state is VerifyState.VERIFYING and not is_stale(account, stale_after):
            raise Conflict(f"volume {volume.name!r} is being verified already", code="verify_running")
        account.verify_state, account.verify_message, account.verified_at = VerifyState.VERIFYING, None, utcnow()
    return account


def is_stale(account: GatewayAccount, stale_after: timedelta) -> bool:
    """A check that has been `verifying` this long died with its process (its thread is gone)."""
    return account.verify_state is VerifyState.VERIFYING and account.verified_at < utcnow() - stale_after


def finish_verify(account_id: int, ok: bool, message: str) -> None:
    """Record a check's outcome on the account it started on (no-op when that account was removed meanwhile)."""
    with db.unit_of_work() as session:
        account = session.get(GatewayAccount, account_id)
        if account is not None and account.verify_state is VerifyState.VERIFYING:
            account.verify_state = VerifyState.OK if ok else VerifyState.FAILED
            account.verify_message, account.verified_at = message, utcnow()


@dataclass(frozen=True)
class AccountState:
    mount_path: str
    login_forbidden: bool


# For the gateway's watcher, twice a second: Core on a plain connection, one indexed query.
_ACCOUNT_STATES = (select(GatewayAccount.username, GatewayAccount.mount_path, GatewayAccount.login_forbidden)
                   .where(GatewayAccount.username.in_(bindparam("usernames", expanding=True))))


def account_states(usernames: list[str]) -> dict[str, AccountState]:
    """username -> the account's mount path and login_forbidden, for those of `usernames` that exist."""
    with db.engine.connect() as connection:
        rows = connection.execute(_ACCOUNT_STATES, {"usernames": usernames}).all()
    return {row.username: AccountState(row.mount_path, row.login_forbidden) for row in rows}
