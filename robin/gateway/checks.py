"""The consistency checks /v1 asks for (verify), run by the gateway agent on the host where the volume is mounted.

RBD: e2fsck -n of a clone of a snapshot taken with the file system frozen; CephFS: an MDS scrub of the path.
Each runs in a thread of its own, so that a long check never holds up the agent's mounts and unmounts.
"""
from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager

from robin import mounts
from robin.ceph import CephError, cephfs_ops, rbd_ops
from robin.errors import RobinError
from robin.gateway import mounting, service
from robin.volumes import service as volumes
from robin.volumes.models import CephfsPath, RbdImage

log = logging.getLogger(__name__)
SCRUB_TIMEOUT_S = 1800
FSCK_TIMEOUT_S = 1800
# e2fsck's exit status: 0 clean, 1/2 errors corrected (never, with -n), 4 errors left, 8 operational error.
FSCK_CLEAN = 0


def run(place: mounting.Place, volume: RbdImage | CephfsPath, account_id: int, path: str | None) -> None:
    """Check the volume and record the outcome on its account; whatever happens lands there."""
    try:
        ok, message = _check_rbd(place, volume, path) if isinstance(volume, RbdImage) else _check_cephfs(volume)
    except (RobinError, CephError, mounts.MountError) as exc:
        ok, message = False, f"the check could not run: {getattr(exc, 'message', exc)}"
    except Exception as exc:  # a thread nobody waits for: whatever happened must reach the account
        log.exception("verifying %s failed", volume.name)
        ok, message = False, f"the check could not run: {exc!r}"
    service.finish_verify(account_id, ok, message)
    log.info("gateway check done", extra={"volume": volume.name, "ok": ok, "message": message})


def _check_cephfs(volume: CephfsPath) -> tuple[bool, str]:
    damage = cephfs_ops.scrub(volumes.ceph_connection(volume), volume.fs_name, volume.path, SCRUB_TIMEOUT_S)
    if damage:
        return False, f"the metadata scrub of {volume.path} found damage: {'; '.join(damage)}"
    return True, f"the metadata scrub of {volume.path} found no damage"


def _check_rbd(place: mounting.Place, volume: RbdImage, path: str | None) -> tuple[bool, str]:
    """e2fsck -n of a clone of a snapshot taken with the file system frozen: consistent, read-only, and the
    mounted file system waits only for the snapshot, never for the check."""
    if path is None:
        return False, "the check could not run: the volume is not mounted"
    conn, suffix = volumes.ceph_connection(volume), uuid.uuid4().hex[:12]
    snapshot, clone = f"robin-verify-{suffix}", f"robin-verify-{suffix}"
    with _frozen(path):
        rbd_ops.create_snapshot(conn, volume.pool, volume.name, snapshot)
    try:
        rbd_ops.clone(conn, volume.pool, volume.name, snapshot, clone, ("layering",),
                      owner=f"gateway-verify:{volume.id}", metadata={})
        try:
            with mounting.block_device(place, volume.pool, clone, mounting.access(volume)) as device:
                return _fsck(device)
        finally:
            rbd_ops.remove_image(conn, volume.pool, clone, volume.size_bytes)
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
