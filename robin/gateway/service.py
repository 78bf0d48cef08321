"""Gateway accounts: one per activated volume, created, checked, forbidden and removed here.

The API process records what is wanted (an activation, a deactivation, login forbidden, a check); `robin gateway`,
the node agent, reports what it did on the same row: mounted (and where), failed (and why), unmounted (the row
goes). Each report is a compare-and-set on the state it acted on, so a change the API made meanwhile is never
overwritten. The gateway ends the live sessions of an account whose row was removed, deactivated, forbidden, or
given another mount path (see sessions.py).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from robin.db import db, utcnow
from robin.errors import Conflict, InvalidInput, NotFound, RobinError
from robin.gateway.models import GatewayAccount, MountState, VerifyState
from robin.gateway.passwords import MAX_PASSWORD_BYTES, burn_time, hash_password, needs_rehash, verify_password
from robin.volumes.models import CephfsPath, RbdImage

# What a POSIX login name may be (useradd's default rule), at most 32 characters.
USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class Login:
    """What the gateway needs of an account once its password was checked."""

    username: str
    mount_path: str | None
    login_forbidden: bool = False


def _fk(volume: RbdImage | CephfsPath) -> str:
    return "rbd_image_id" if isinstance(volume, RbdImage) else "cephfs_path_id"


def _of_volume(volume: RbdImage | CephfsPath):
    """The volume's account, also while it is being deactivated."""
    return select(GatewayAccount).where(getattr(GatewayAccount, _fk(volume)) == volume.id)


def _active() -> object:
    """Accounts that are activations: not being deactivated (their logins are refused already)."""
    return GatewayAccount.mount_state != MountState.UNMOUNTING


def _active_of(volume: RbdImage | CephfsPath):
    return _of_volume(volume).where(_active())


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


@dataclass(frozen=True)
class Activated:
    account_id: int
    created: bool  # no account before: a failure must leave none behind
    mount_state: MountState


def activate(volume: RbdImage | CephfsPath, username: str, password: str, mount_path: str | None = None) -> Activated:
    """Create the volume's account, or replace its user and password; login is allowed again. Without a
    `mount_path` the gateway agent is asked to mount the volume (a mounted one stays so); with one, the volume
    is mounted there already (by whoever made that mount) and the account is served at once.
    A username another volume's account has is a 409 `username_taken`."""
    validate_account(username, password, mount_path or "/mnt")
    password_hash = hash_password(password)  # ~50 ms: before the transaction, not while holding its lock
    try:
        with db.unit_of_work() as session:
            account = session.scalar(_of_volume(volume))
            holder = session.scalar(select(GatewayAccount).where(GatewayAccount.username == username))
            if holder is not None and holder is not account:
                raise _username_taken(username)
            created = account is None
            if created:
                account = GatewayAccount(**{_fk(volume): volume.id})
                session.add(account)
            account.username, account.password_hash, account.login_forbidden = username, password_hash, False
            if mount_path is not None:
                account.mount_path, account.mount_state = mount_path, MountState.MOUNTED
            elif account.mount_state is not MountState.MOUNTED:
                _ask_agent(account, MountState.PENDING)
            session.flush()
            return Activated(account.id, created, account.mount_state)
    except IntegrityError as exc:  # PostgreSQL: a concurrent activation took the username first
        raise _username_taken(username) from exc


def _ask_agent(account: GatewayAccount, state: MountState) -> None:
    """Set what the agent is to do next; its report on an earlier request no longer holds."""
    account.mount_state = state
    account.mount_error_code = account.mount_error_status = account.mount_error_message = None


def _username_taken(username: str) -> Conflict:
    return Conflict(f"the gateway user {username!r} belongs to another volume", code="username_taken",
                    details={"user": username})


def account_of(volume: RbdImage | CephfsPath) -> GatewayAccount | None:
    """The volume's account, also while it is being deactivated."""
    with db.reading() as session:
        return session.scalar(_of_volume(volume))


def account(account_id: int) -> GatewayAccount | None:
    with db.reading() as session:
        return session.get(GatewayAccount, account_id)


def find(username: str) -> GatewayAccount | None:
    """The account that may log in as `username` (login may still be forbidden): none while it is deactivated."""
    with db.reading() as session:
        return session.scalar(select(GatewayAccount).where(GatewayAccount.username == username, _active()))


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
        account = session.scalar(_active_of(volume))
        if account is None:
            raise NotFound(f"volume {volume.name!r} is not activated", code="account_not_found")
        account.login_forbidden = True
    return account


def deactivate(volume: RbdImage | CephfsPath) -> GatewayAccount | None:
    """Ask the agent to unmount the volume and then remove its account; logins are refused (and live sessions
    end) from now on. None when the volume had no account."""
    with db.unit_of_work() as session:
        account = session.scalar(_of_volume(volume))
        if account is not None:
            _ask_agent(account, MountState.UNMOUNTING)
        return account


def remove(volume: RbdImage | CephfsPath) -> bool:
    """Remove the volume's account at once (its sessions end), mounted or not: for an account on a mount the
    agent did not make (activate with a mount_path). False when it had none."""
    with db.unit_of_work() as session:
        account = session.scalar(_of_volume(volume))
        if account is not None:
            session.delete(account)
        return account is not None


def start_verify(volume: RbdImage | CephfsPath, stale_after: timedelta) -> GatewayAccount:
    """Mark the account `verifying` from now on; a 409 while a check that is not stale runs."""
    with db.unit_of_work() as session:
        account = session.scalar(_active_of(volume))
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
    mount_path: str | None
    login_forbidden: bool


# For the gateway's watcher, twice a second: Core on a plain connection, one indexed query.
_ACCOUNT_STATES = (select(GatewayAccount.username, GatewayAccount.mount_path, GatewayAccount.login_forbidden)
                   .where(GatewayAccount.username.in_(bindparam("usernames", expanding=True)), _active()))


def account_states(usernames: list[str]) -> dict[str, AccountState]:
    """username -> the account's mount path and login_forbidden, for those of `usernames` that exist."""
    with db.engine.connect() as connection:
        rows = connection.execute(_ACCOUNT_STATES, {"usernames": usernames}).all()
    return {row.username: AccountState(row.mount_path, row.login_forbidden) for row in rows}


# --- the agent's side: what is wanted, and its reports ------------------------------------------------

def wanted() -> list[tuple[GatewayAccount, RbdImage | CephfsPath]]:
    """Every account with its volume, for the agent to compare with what is mounted: three queries a round,
    however many accounts there are."""
    with db.reading() as session:
        accounts = list(session.scalars(select(GatewayAccount).order_by(GatewayAccount.id)))
        volumes = {}
        for model, ids in ((RbdImage, {account.rbd_image_id for account in accounts} - {None}),
                           (CephfsPath, {account.cephfs_path_id for account in accounts} - {None})):
            if ids:
                volumes.update((volume.id, volume) for volume in
                               session.scalars(select(model).where(model.id.in_(ids))).unique())
    return [(account, volumes[account.rbd_image_id or account.cephfs_path_id]) for account in accounts]


def report_mounted(account_id: int, mount_path: str) -> bool:
    """The agent mounted the account's volume at `mount_path`. False when the account is no longer pending (or
    mounted, for a mount it made again): deactivated or removed meanwhile, and the mount is to go."""
    return _report(account_id, (MountState.PENDING, MountState.MOUNTED), mount_state=MountState.MOUNTED,
                   mount_path=mount_path, mount_error_code=None, mount_error_status=None, mount_error_message=None)


def report_failed(account_id: int, expected: MountState, error: RobinError) -> bool:
    """The agent could not do what `expected` asked (a mount, an unmount): the state becomes `failed` for a
    mount, and stays `unmounting` (to be tried again) for an unmount; the error is kept for the API."""
    state = MountState.UNMOUNTING if expected is MountState.UNMOUNTING else MountState.FAILED
    return _report(account_id, (expected,), mount_state=state, mount_error_code=error.code,
                   mount_error_status=error.status, mount_error_message=error.message)


def _report(account_id: int, expected: tuple[MountState, ...], **values) -> bool:
    with db.unit_of_work() as session:
        done = session.execute(update(GatewayAccount)
                               .where(GatewayAccount.id == account_id, GatewayAccount.mount_state.in_(expected))
                               .values(mount_reported_at=utcnow(), **values))
        return done.rowcount == 1


def forget(account_id: int) -> bool:
    """The agent unmounted a deactivated account's volume: the account goes (unless activated again meanwhile)."""
    with db.unit_of_work() as session:
        done = session.execute(delete(GatewayAccount).where(GatewayAccount.id == account_id,
                                                            GatewayAccount.mount_state == MountState.UNMOUNTING))
        return done.rowcount == 1


def withdraw(account_id: int) -> bool:
    """Remove an account whose first activation the agent did not complete (failed, or never reported)."""
    with db.unit_of_work() as session:
        done = session.execute(delete(GatewayAccount).where(
            GatewayAccount.id == account_id, GatewayAccount.mount_state.in_((MountState.PENDING, MountState.FAILED))))
        return done.rowcount == 1
