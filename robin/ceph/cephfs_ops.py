"""CephFS directory operations, idempotent like the RBD ones: creating a directory robin already
created succeeds, removing a missing one succeeds, a foreign directory with the name is
CephAlreadyExists."""
from __future__ import annotations

import json
import posixpath
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import cephfs

from robin.ceph.connection import CephConnection, progress
from robin.ceph.errors import CephAlreadyExists, CephBusy, CephNotFound, translate
from robin.ceph.rbd_ops import Observed

QUOTA_XATTR = "ceph.quota.max_bytes"
RBYTES_XATTR = "ceph.dir.rbytes"
# Ownership mark on the directory itself: a user xattr costs one MDS request.
OWNER_XATTR = "user.robin.volume_id"
DIR_MODE = 0o755


def _getxattr(fs: cephfs.LibCephFS, path: str, name: str) -> str | None:
    try:
        return fs.getxattr(path, name).decode()
    except cephfs.NoData:
        return None


def create_dir(conn: CephConnection, fs_name: str, path: str, quota_bytes: int, owner: str) -> None:
    def create(fs: cephfs.LibCephFS) -> None:
        try:
            _mkdir(fs, path)
        except cephfs.ObjectExists:
            found = _getxattr(fs, path, OWNER_XATTR)
            if found != owner:
                raise CephAlreadyExists(f"CephFS path {fs_name}:{path} already exists and is not this volume",
                                        details={"fs": fs_name, "path": path, "owner": found}) from None
        fs.setxattr(path, OWNER_XATTR, owner.encode(), 0)
        fs.setxattr(path, QUOTA_XATTR, str(quota_bytes).encode(), 0)

    conn.in_filesystem(fs_name, "cephfs.create", f"creating CephFS path {fs_name}:{path}", create)


def _mkdir(fs: cephfs.LibCephFS, path: str) -> None:
    """mkdir, making the parents only when one is missing: the project's directory exists from its first volume
    on, and asking for it first on every create (mkdirs) costs a lookup per level of the path."""
    try:
        fs.mkdir(path, DIR_MODE)
    except cephfs.ObjectNotFound:
        try:
            fs.mkdirs(posixpath.dirname(path), DIR_MODE)
        except cephfs.ObjectExists:
            pass  # made meanwhile by another create in the project
        fs.mkdir(path, DIR_MODE)


def set_quota(conn: CephConnection, fs_name: str, path: str, quota_bytes: int) -> None:
    conn.in_filesystem(fs_name, "cephfs.set_quota", f"setting the quota of CephFS path {fs_name}:{path}",
                       lambda fs: fs.setxattr(path, QUOTA_XATTR, str(quota_bytes).encode(), 0))


def used_bytes(conn: CephConnection, fs_name: str, path: str) -> int:
    """Recursive bytes below the directory, as the MDS accounts them (updated lazily by Ceph)."""
    return conn.in_filesystem(fs_name, "cephfs.du", f"measuring CephFS path {fs_name}:{path}",
                              lambda fs: int(_getxattr(fs, path, RBYTES_XATTR) or 0))


def remove_tree(conn: CephConnection, fs_name: str, path: str) -> None:
    """Remove the directory and everything under it; idempotent. Done only when the directory is
    gone: an entry that vanished meanwhile is skipped, not taken for the whole tree being gone."""
    conn.in_filesystem(fs_name, "cephfs.remove", f"removing CephFS path {fs_name}:{path}",
                       lambda fs: _remove_tree(fs, path))


def _remove_tree(fs: cephfs.LibCephFS, path: str) -> None:
    try:
        entries = _entries(fs, path)
    except cephfs.ObjectNotFound:
        return  # already gone: removing is idempotent
    for entry in entries:
        progress()  # a big tree takes long, but each entry is an answer from the MDS
        child = posixpath.join(path, entry)
        try:
            if stat.S_ISDIR(fs.lstat(child).st_mode):
                _remove_tree(fs, child)
            else:
                fs.unlink(child)
        except cephfs.ObjectNotFound:
            pass  # removed by someone else meanwhile: gone, as wanted
    try:
        fs.rmdir(path)
    except cephfs.ObjectNotFound:
        pass


def _entries(fs: cephfs.LibCephFS, path: str) -> list[str]:
    handle = fs.opendir(path)
    try:
        names = []
        while (entry := fs.readdir(handle)) is not None:
            name = entry.d_name.decode()
            if name not in (".", ".."):
                names.append(name)
        return names
    finally:
        fs.closedir(handle)


# --- snapshots: `.snap/<name>` directories -------------------------------------------------------

def create_snapshot(conn: CephConnection, fs_name: str, path: str, snapshot: str) -> None:
    def snap(fs: cephfs.LibCephFS) -> None:
        try:
            fs.mksnap(path, snapshot, DIR_MODE)
        except cephfs.ObjectExists:
            pass  # taken before under this name: robin owns the directory

    conn.in_filesystem(fs_name, "cephfs.snap_create", f"snapshotting CephFS path {fs_name}:{path}@{snapshot}", snap)


def remove_snapshot(conn: CephConnection, fs_name: str, path: str, snapshot: str) -> None:
    def unsnap(fs: cephfs.LibCephFS) -> None:
        try:
            fs.rmsnap(path, snapshot)
        except cephfs.ObjectNotFound:
            pass

    conn.in_filesystem(fs_name, "cephfs.snap_remove", f"removing snapshot {fs_name}:{path}@{snapshot}", unsnap)


def list_snapshots(conn: CephConnection, fs_name: str, path: str) -> list[str]:
    return conn.in_filesystem(fs_name, "cephfs.snap_list", f"listing snapshots of {fs_name}:{path}",
                              lambda fs: _entries(fs, posixpath.join(path, ".snap")))


# --- trash: a directory beside the projects' ------------------------------------------------------

def trash_move(conn: CephConnection, fs_name: str, path: str, trash_path: str) -> str | None:
    """Rename the directory into the trash (instant, whatever its size). Idempotent; None when
    there was nothing to move."""
    def move(fs: cephfs.LibCephFS) -> str | None:
        # The trash's directory exists from the first delete on: made only when the rename finds it missing, as a
        # create's project directory is (_mkdir).
        try:
            fs.rename(path, trash_path)
        except cephfs.ObjectNotFound:
            if _exists(fs, trash_path):
                return trash_path  # moved before
            if not _exists(fs, path):
                return None  # nothing to move
            try:
                fs.mkdirs(posixpath.dirname(trash_path), 0o700)
            except cephfs.ObjectExists:
                pass  # made meanwhile by another delete
            try:
                fs.rename(path, trash_path)
            except cephfs.ObjectNotFound:
                return trash_path if _exists(fs, trash_path) else None
        return trash_path

    return conn.in_filesystem(fs_name, "cephfs.trash_move", f"moving CephFS path {fs_name}:{path} to the trash",
                              move)


def trash_restore(conn: CephConnection, fs_name: str, trash_path: str, path: str) -> None:
    def restore(fs: cephfs.LibCephFS) -> None:
        try:
            fs.rename(trash_path, path)
        except cephfs.ObjectNotFound:
            if not _exists(fs, path):
                raise
            # restored before

    conn.in_filesystem(fs_name, "cephfs.trash_restore", f"restoring CephFS path {fs_name}:{path} from the trash",
                       restore)


def _exists(fs: cephfs.LibCephFS, path: str) -> bool:
    try:
        fs.stat(path)
        return True
    except cephfs.ObjectNotFound:
        return False


# --- what CephFS holds, for the reconciler -------------------------------------------------------

def inspect(conn: CephConnection, fs_name: str, path: str) -> Observed:
    def observe(fs: cephfs.LibCephFS) -> Observed:
        try:
            stats = fs.stat(path)
        except cephfs.ObjectNotFound:
            return Observed(False)
        quota = _getxattr(fs, path, QUOTA_XATTR)
        # The binding gives local time without a zone; .timestamp() reads it as local.
        created = datetime.fromtimestamp(stats.st_ctime.timestamp(), UTC)
        return Observed(True, _getxattr(fs, path, OWNER_XATTR), int(quota) if quota else None, created)

    return conn.in_filesystem(fs_name, "cephfs.inspect", f"inspecting CephFS path {fs_name}:{path}", observe)


def mark_owner(conn: CephConnection, fs_name: str, path: str, owner: str) -> None:
    conn.in_filesystem(fs_name, "cephfs.mark", f"recording the owner of {fs_name}:{path}",
                       lambda fs: fs.setxattr(path, OWNER_XATTR, owner.encode(), 0))


def snapshot_exists(conn: CephConnection, fs_name: str, path: str, snapshot: str) -> bool:
    try:
        return snapshot in list_snapshots(conn, fs_name, path)
    except CephNotFound:
        return False


def list_dirs(conn: CephConnection, fs_name: str, path: str) -> list[str]:
    """Subdirectory names of path ([] when it does not exist)."""
    def subdirectories(fs: cephfs.LibCephFS) -> list[str]:
        try:
            return [name for name in _entries(fs, path) if stat.S_ISDIR(fs.lstat(posixpath.join(path, name)).st_mode)]
        except cephfs.ObjectNotFound:
            return []

    return conn.in_filesystem(fs_name, "cephfs.list", f"listing CephFS path {fs_name}:{path}", subdirectories)


# --- scrub ----------------------------------------------------------------------------------------

SCRUB_POLL_S = 0.5


def scrub(conn: CephConnection, fs_name: str, path: str, timeout: float) -> list[str]:
    """Scrub the directory tree's metadata on rank 0 of its file system and wait for it; answers with the damage
    the MDS records under `path` (empty: none); damage recorded by inode number alone counts too."""
    tag = _mds_command(conn, fs_name, "scrub start", path=path, scrubops=["recursive"])["scrub_tag"]
    deadline = time.monotonic() + timeout
    while _scrubbing(_mds_command(conn, fs_name, "scrub status"), tag):
        if time.monotonic() > deadline:
            raise CephBusy(f"the scrub of {fs_name}:{path} did not finish within {timeout:g}s")
        time.sleep(SCRUB_POLL_S)
    damage = _mds_command(conn, fs_name, "damage ls")
    return [f"{entry.get('damage_type', 'damage')} at {entry.get('path') or entry.get('ino')}" for entry in damage
            if not entry.get("path") or entry["path"] == path or entry["path"].startswith(path.rstrip("/") + "/")]


def _scrubbing(status: dict, tag: str) -> bool:
    # The MDS keeps listing a finished scrub's tag until the next one; "IDLE" / "no active scrubs" means done.
    state = status.get("status", "")
    return tag in status.get("scrubs", {}) and not state.startswith(("IDLE", "no active"))


def _mds_command(conn: CephConnection, fs_name: str, prefix: str, **args):
    command = json.dumps({"prefix": prefix, "format": "json", **args})
    ret, out, status = conn.in_filesystem(fs_name, "cephfs.mds_command", f"{prefix} on {fs_name}",
                                          lambda fs: fs.mds_command(f"{fs_name}:0", command, b""))
    if ret != 0:
        # By its errno, as a binding error would be: a user without `mds allow *` gets EACCES here.
        raise translate(cephfs.OSError(-ret, status or f"{prefix} failed"), f"{prefix} on {fs_name}",
                        operation="cephfs.mds_command", target=conn.name)
    return json.loads(out) if out else {}


# --- what a directory holds, for the drift audit and adoption ---------------------------------------

@dataclass(frozen=True)
class DirDetails:
    path: str
    quota_bytes: int | None
    owner: str | None
    created_at: datetime
    snapshots: tuple[str, ...]


def describe_dir(conn: CephConnection, fs_name: str, path: str) -> DirDetails | None:
    """The directory's quota, robin's mark and its own snapshots (not the `_<name>_<inode>` entries a
    snapshot of an ancestor shows in `.snap`); None when it does not exist."""
    def describe(fs: cephfs.LibCephFS) -> DirDetails | None:
        try:
            stats = fs.stat(path)
        except cephfs.ObjectNotFound:
            return None
        quota = _getxattr(fs, path, QUOTA_XATTR)
        snapshots = tuple(sorted(name for name in _entries(fs, posixpath.join(path, ".snap"))
                                 if not name.startswith("_")))
        return DirDetails(path, int(quota) if quota and int(quota) > 0 else None, _getxattr(fs, path, OWNER_XATTR),
                          datetime.fromtimestamp(stats.st_ctime.timestamp(), UTC), snapshots)

    return conn.in_filesystem(fs_name, "cephfs.describe", f"describing CephFS path {fs_name}:{path}", describe)
