"""Activation: a volume mounted on the gateway's host with an SFTP account rooted at it, and its background checks.

The API process does this (it has robin's Ceph credentials); `robin gateway` serves the account's sessions and
ends them when the account's row changes. What is mounted is read from the kernel each time (mounting.py).
"""
from __future__ import annotations

import logging
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, current_app

from robin import config, mounts
from robin.ceph import CephError, cephfs_ops, rbd_ops
from robin.errors import Conflict, RobinError
from robin.gateway import mounting, service
from robin.gateway.models import GatewayAccount, VerifyState
from robin.volumes import service as volumes
from robin.volumes.models import CephfsPath, RbdImage

log = logging.getLogger(__name__)
# A check still `verifying` after this died with its process: shown as failed, and a new one may start.
STALE_VERIFY = timedelta(hours=1)
SCRUB_TIMEOUT_S = 1800
FSCK_TIMEOUT_S = 1800
# e2fsck's exit status: 0 clean, 1/2 errors corrected (never, with -n), 4 errors left, 8 operational error.
FSCK_CLEAN = 0

Volume = RbdImage | CephfsPath


def _where() -> tuple[str, str]:
    settings = config.current()
    return settings.gateway_dir, settings.gateway_mounter


def _access(volume: Volume) -> mounting.Access:
    conn = volumes.ceph_connection(volume)
    described = conn.describe()
    user, key = conn.credentials()
    return mounting.Access(described["monitors"], described["fsid"], user, key)


def activate(volume: Volume, username: str, password: str) -> GatewayAccount:
    """Mount the volume (or keep its mount) and open, or update, its account. An RBD image is mounted only while
    no node uses it: a second writer would corrupt its file system."""
    service.validate_account(username, password)
    gateway_dir, mounter = _where()
    path = mounting.mount_path(gateway_dir, volume)
    if not mounting.is_mounted(path):
        if isinstance(volume, RbdImage):
            _refuse_in_use(volume)
        mounting.mount(gateway_dir, mounter, volume, _access(volume))
    try:
        return service.activate(volume, username, password, path)
    except RobinError:
        if service.account_of(volume) is None:  # a first activation failed: leave nothing mounted
            mounting.unmount(gateway_dir, mounter, volume)
        raise


def _refuse_in_use(volume: RbdImage) -> None:
    users = rbd_ops.users(volumes.ceph_connection(volume), volume.pool, volume.name)
    if users:
        raise Conflict(f"RBD image {volume.name!r} is in use ({'; '.join(users)}); the gateway mounts it only while "
                       "no node has it mapped", code="volume_in_use", details={"users": users})


def deactivate(volume: Volume) -> bool:
    """Remove the account (the gateway ends its sessions), then unmount; False when it was not activated.
    Unmounts even then: a mount left by a deactivation that failed half-way goes too."""
    removed = service.remove(volume)
    mounting.unmount(*_where(), volume)
    return removed


def forbid_login(volume: Volume) -> GatewayAccount:
    return service.forbid_login(volume)


@dataclass(frozen=True)
class Activation:
    """What holds now for an activated volume: its account, its mount and its last check."""

    username: str
    mounted: bool
    login_forbidden: bool
    verify_state: VerifyState | None
    verify_message: str | None


def activation_of(volume: Volume) -> Activation | None:
    """The volume's activation, None when it is not activated. A check that never finished counts as failed."""
    account = service.account_of(volume)
    if account is None:
        return None
    verify, message = account.verify_state, account.verify_message
    if service.is_stale(account, STALE_VERIFY):
        verify, message = VerifyState.FAILED, f"the check started at {account.verified_at:%Y-%m-%dT%H:%M:%SZ} " \
                                              "never finished (robin restarted meanwhile?): verify again"
    return Activation(account.username, mounting.is_mounted(account.mount_path), account.login_forbidden, verify,
                      message)


def verify(volume: Volume) -> Activation | None:
    """Start a consistency check in a thread of this process and answer at once with the activation as it
    was then; the check's outcome lands in the account's verify fields."""
    account = service.start_verify(volume, STALE_VERIFY)
    answer = activation_of(volume)  # before the thread starts: a quick check must not have ended it already
    app = current_app._get_current_object()
    threading.Thread(target=_check, args=(app, volume, account.id, account.mount_path),
                     name=f"verify-{volume.name}", daemon=True).start()
    return answer


def _check(app: Flask, volume: Volume, account_id: int, path: str) -> None:
    with app.app_context():
        try:
            ok, message = _check_rbd(volume, path) if isinstance(volume, RbdImage) else _check_cephfs(volume)
        except (RobinError, CephError, mounts.MountError) as exc:
            ok, message = False, f"the check could not run: {getattr(exc, 'message', exc)}"
        except Exception as exc:  # a thread nobody waits for: whatever happened must reach the account
            log.exception("verifying %s failed", volume.name)
            ok, message = False, f"the check could not run: {exc!r}"
        service.finish_verify(account_id, ok, message)


def _check_cephfs(volume: CephfsPath) -> tuple[bool, str]:
    damage = cephfs_ops.scrub(volumes.ceph_connection(volume), volume.fs_name, volume.path, SCRUB_TIMEOUT_S)
    if damage:
        return False, f"the metadata scrub of {volume.path} found damage: {'; '.join(damage)}"
    return True, f"the metadata scrub of {volume.path} found no damage"


def _check_rbd(volume: RbdImage, path: str) -> tuple[bool, str]:
    """e2fsck -n of a clone of a snapshot taken with the file system frozen: consistent, read-only, and the
    mounted file system waits only for the snapshot, never for the check."""
    conn, suffix = volumes.ceph_connection(volume), uuid.uuid4().hex[:12]
    snapshot, clone = f"robin-verify-{suffix}", f"robin-verify-{suffix}"
    with _frozen(path):
        rbd_ops.create_snapshot(conn, volume.pool, volume.name, snapshot)
    try:
        rbd_ops.clone(conn, volume.pool, volume.name, snapshot, clone, ("layering",),
                      owner=f"gateway-verify:{volume.id}", metadata={})
        try:
            with mounting.block_device(*_where(), volume.pool, clone, _access(volume)) as device:
                return _fsck(device)
        finally:
            rbd_ops.remove_image(conn, volume.pool, clone)
    finally:
        rbd_ops.remove_snapshot(conn, volume.pool, volume.name, snapshot)


@contextmanager
def _frozen(path: str):
    mounts.run("fsfreeze", "--freeze", path)
    try:
        yield
    finally:
        mounts.run("fsfreeze", "--unfreeze", path)


def _fsck(device: str) -> tuple[bool, str]:
    done = mounts.run("e2fsck", "-n", "-f", device, timeout=FSCK_TIMEOUT_S, ok=tuple(range(256)))
    said = " | ".join((done.stdout + done.stderr).strip().splitlines())[-1500:]
    if done.returncode == FSCK_CLEAN:
        return True, "e2fsck -n -f found no errors"
    return False, f"e2fsck -n -f exited with {done.returncode}: {said}"
