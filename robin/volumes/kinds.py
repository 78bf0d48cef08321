"""The two kinds of volume: where each lives in Ceph and which binding calls manage it.

The lifecycle (states, quota, undo) is one piece of code in service.py; a kind supplies only
what differs (the Kind protocol): the model, how a request places the volume, and the idempotent
Ceph operations.
"""
from __future__ import annotations

import logging
import posixpath
from typing import Protocol

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from robin import config
from robin.ceph import CephConnection, CephError, cephfs_ops, cephx_users, rbd_ops, subvolumes
from robin.ceph.cephx_users import VolumeUser
from robin.db import db
from robin.errors import Conflict, InvalidInput
from robin.volumes.models import TRASHED_SUBVOLUME, CephfsPath, RbdImage, Volume

log = logging.getLogger(__name__)
# librbd applies image metadata keys starting with this as the image's own configuration (conf_rbd_cache,
# conf_rbd_qos_*, ...) in every client that opens it: a tenant's metadata must not configure the clients.
CONFIGURATION_PREFIX = "conf_"


def _image_metadata(metadata: dict[str, str]) -> dict[str, str]:
    configuration = sorted(key for key in metadata if key.lower().startswith(CONFIGURATION_PREFIX))
    if configuration:
        message = f"keys starting with {CONFIGURATION_PREFIX!r} are librbd configuration, which robin does not set"
        raise InvalidInput(f"metadata {configuration}: {message}; use other keys", code="reserved_metadata_key",
                           details={"fields": {"metadata": [message]}, "keys": configuration})
    return metadata


def _choose(field: str, value: str | None, default: str, allowed: tuple[str, ...], setting: str) -> str:
    value = value or default
    if value not in allowed:
        raise InvalidInput(f"{field} {value!r} is not one robin places volumes in; use one of {list(allowed)}",
                           details={"fields": {field: [f"must be one of {list(allowed)} ({setting})"]}})
    return value


class Kind(Protocol):
    """What the volume and snapshot services need of a kind of volume. Each kind's operations take
    rows of its own `model`; every Ceph operation is idempotent."""

    model: type[Volume]
    noun: str
    # The snapshot row's column and relation that point at a volume of this kind.
    snapshot_fk: str
    snapshot_relation: str
    # Whether a smaller size cuts off data (an RBD image) or only refuses further writes (a CephFS quota).
    shrink_destroys_data: bool

    def placement(self, spec: dict, project: str) -> dict:
        """The columns that say where (and how) a requested volume is made in Ceph."""

    def reserved(self, executor: Session | Connection, volume: Volume) -> None:
        """In the transaction that inserts the volume's row: read what making it will need of the database, so
        that the create asks in that transaction rather than in one of its own."""

    def create(self, conn: CephConnection, volume: Volume) -> dict:
        """Make the volume; the columns its outcome records beside the state (a subvolume's path)."""

    def resize(self, conn: CephConnection, volume: Volume, size_bytes: int) -> None: ...

    def remove(self, conn: CephConnection, volume: Volume) -> None: ...

    def used_bytes(self, conn: CephConnection, volume: Volume) -> int: ...

    def inspect(self, conn: CephConnection, volume: Volume) -> rbd_ops.Observed: ...

    def mark_owner(self, conn: CephConnection, volume: Volume) -> None: ...

    def snapshot_exists(self, conn: CephConnection, volume: Volume, snapshot: str) -> bool: ...

    def trash(self, conn: CephConnection, volume: Volume, delay_s: int) -> str | None:
        """Move the volume to the trash; its reference there, or None when there was nothing to move."""

    def restore(self, conn: CephConnection, volume: Volume) -> None: ...

    def purge(self, conn: CephConnection, volume: Volume) -> None: ...

    def create_snapshot(self, conn: CephConnection, volume: Volume, snapshot: str) -> None: ...

    def remove_snapshot(self, conn: CephConnection, volume: Volume, snapshot: str) -> None: ...


class RbdKind:
    model = RbdImage
    noun = "RBD image"
    snapshot_fk, snapshot_relation = "rbd_image_id", "rbd_image"
    # Shrinking an image cuts off whatever the file system kept at its end.
    shrink_destroys_data = True

    @staticmethod
    def placement(spec: dict, project: str) -> dict:
        settings = config.current()
        pool = _choose("pool", spec.get("pool"), settings.rbd_default_pool, settings.rbd_pools, "ROBIN_RBD_POOLS")
        return {"pool": pool, "features": spec.get("features") or list(settings.rbd_default_features),
                "image_metadata": _image_metadata(spec.get("metadata") or {})}

    @staticmethod
    def reserved(executor: Session | Connection, volume: RbdImage) -> None:
        pass  # an image's create needs nothing more of the database

    @staticmethod
    def create(conn: CephConnection, volume: RbdImage) -> dict:
        rbd_ops.create_image(conn, volume.pool, volume.name, volume.size_bytes, volume.features, owner=volume.id,
                             metadata=volume.image_metadata)
        return {}

    @staticmethod
    def resize(conn: CephConnection, volume: RbdImage, size_bytes: int) -> None:
        rbd_ops.resize_image(conn, volume.pool, volume.name, size_bytes)

    @staticmethod
    def remove(conn: CephConnection, volume: RbdImage) -> None:
        # The larger of the size and a resize's target: what Ceph may have after a resize cut short.
        rbd_ops.remove_image(conn, volume.pool, volume.name, volume.reserved_bytes)

    @staticmethod
    def used_bytes(conn: CephConnection, volume: RbdImage) -> int:
        return rbd_ops.used_bytes(conn, volume.pool, volume.name)

    @staticmethod
    def inspect(conn: CephConnection, volume: RbdImage) -> rbd_ops.Observed:
        return rbd_ops.inspect(conn, volume.pool, volume.name)

    @staticmethod
    def mark_owner(conn: CephConnection, volume: RbdImage) -> None:
        rbd_ops.mark_owner(conn, volume.pool, volume.name, volume.id)

    @staticmethod
    def snapshot_exists(conn: CephConnection, volume: RbdImage, snapshot: str) -> bool:
        return rbd_ops.snapshot_exists(conn, volume.pool, volume.name, snapshot)

    @staticmethod
    def trash(conn: CephConnection, volume: RbdImage, delay_s: int) -> str | None:
        return rbd_ops.trash_move(conn, volume.pool, volume.name, volume.id, delay_s)

    @staticmethod
    def restore(conn: CephConnection, volume: RbdImage) -> None:
        rbd_ops.trash_restore(conn, volume.pool, volume.trash_ref, volume.name)

    @staticmethod
    def purge(conn: CephConnection, volume: RbdImage) -> None:
        rbd_ops.trash_purge(conn, volume.pool, volume.trash_ref, volume.name, volume.id, volume.reserved_bytes)

    @staticmethod
    def create_snapshot(conn: CephConnection, volume: RbdImage, snapshot: str) -> None:
        rbd_ops.create_snapshot(conn, volume.pool, volume.name, snapshot)

    @staticmethod
    def remove_snapshot(conn: CephConnection, volume: RbdImage, snapshot: str) -> None:
        rbd_ops.remove_snapshot(conn, volume.pool, volume.name, snapshot)


# Beside the projects' directories; volume and project names cannot start with a dot.
TRASH_DIR = ".trash"


class _Directories:
    """The directory layout: <cephfs_root>/<project>/<name> with a quota xattr; the trash is a rename. A path's
    cephx user (`fs authorize`) is removed after its directory moved or went (_user_goes_after)."""

    @staticmethod
    def path(project: str, name: str) -> str:
        return posixpath.join(config.current().cephfs_root, project, name)

    @staticmethod
    def reserved(executor: Session | Connection, volume: CephfsPath) -> None:
        volume.predecessors = _predecessors(executor, volume)

    @staticmethod
    def create(conn: CephConnection, volume: CephfsPath) -> dict:
        _remove_predecessors_users(conn, volume)
        cephfs_ops.create_dir(conn, volume.fs_name, volume.path, volume.size_bytes, owner=volume.id)
        return {}

    @staticmethod
    def authorize(conn: CephConnection, volume: CephfsPath) -> VolumeUser:
        return cephx_users.authorize(conn, volume.fs_name, volume.path, volume.id)

    @staticmethod
    def deauthorize(conn: CephConnection, volume: CephfsPath) -> None:
        cephx_users.deauthorize(conn, volume.id)

    @staticmethod
    def resize(conn: CephConnection, volume: CephfsPath, size_bytes: int) -> None:
        cephfs_ops.set_quota(conn, volume.fs_name, volume.path, size_bytes)

    @staticmethod
    def remove(conn: CephConnection, volume: CephfsPath) -> None:
        cephfs_ops.remove_tree(conn, volume.fs_name, volume.path)
        _user_goes_after(conn, volume)

    @staticmethod
    def inspect(conn: CephConnection, volume: CephfsPath) -> rbd_ops.Observed:
        return cephfs_ops.inspect(conn, volume.fs_name, volume.path)

    @staticmethod
    def mark_owner(conn: CephConnection, volume: CephfsPath) -> None:
        cephfs_ops.mark_owner(conn, volume.fs_name, volume.path, volume.id)

    @staticmethod
    def snapshot_exists(conn: CephConnection, volume: CephfsPath, snapshot: str) -> bool:
        return cephfs_ops.snapshot_exists(conn, volume.fs_name, volume.path, snapshot)

    @staticmethod
    def trash(conn: CephConnection, volume: CephfsPath) -> str | None:
        trash_path = posixpath.join(config.current().cephfs_root, TRASH_DIR, volume.id)
        return cephfs_ops.trash_move(conn, volume.fs_name, volume.path, trash_path)

    @staticmethod
    def restore(conn: CephConnection, volume: CephfsPath) -> None:
        cephfs_ops.trash_restore(conn, volume.fs_name, volume.trash_ref, volume.path)

    @staticmethod
    def purge(conn: CephConnection, volume: CephfsPath) -> None:
        cephfs_ops.remove_tree(conn, volume.fs_name, volume.trash_ref)
        _user_goes_after(conn, volume)  # again: one made in a race with the delete goes now

    @staticmethod
    def create_snapshot(conn: CephConnection, volume: CephfsPath, snapshot: str) -> None:
        cephfs_ops.create_snapshot(conn, volume.fs_name, volume.path, snapshot)

    @staticmethod
    def remove_snapshot(conn: CephConnection, volume: CephfsPath, snapshot: str) -> None:
        cephfs_ops.remove_snapshot(conn, volume.fs_name, volume.path, snapshot)


def _remove_predecessors_users(conn: CephConnection, volume: CephfsPath) -> None:
    """Remove the users of the earlier volumes at this directory path (deleted ones: the path is live once), before
    the path holds data: a user a crash left behind (a request for credentials racing a delete, while the
    reconciler did not run) names the path, not the volume, and would reach the new volume's files. Subvolume paths
    are never reused (the mgr puts a new subvolume in a directory of its own). The earlier volumes are those the
    row's own insert found (reserved: once the row is live, no other volume can take or leave the path), or, for a
    row loaded again (the reconciler's), read now. `auth rm` only when there are any."""
    earlier = getattr(volume, "predecessors", None)
    if earlier is None:
        with db.reading() as session:
            earlier = _predecessors(session, volume)
    for volume_id in earlier:
        cephx_users.deauthorize(conn, volume_id)


# The other rows at a directory path: built once, as the write paths' statements are.
_PREDECESSORS = select(CephfsPath.id).where(
    CephfsPath.cluster_id == bindparam("cluster_id"), CephfsPath.fs_name == bindparam("fs_name"),
    CephfsPath.path == bindparam("path"), CephfsPath.id != bindparam("volume_id"))


# A subvolume of the trash by its name on a file system: the condition of its index, whole.
_TRASHED_NAMESAKE = select(CephfsPath.id).where(
    CephfsPath.cluster_id == bindparam("cluster_id"), CephfsPath.fs_name == bindparam("fs_name"),
    CephfsPath.name == bindparam("name"), TRASHED_SUBVOLUME).limit(1)


def trashed_namesake(executor: Session | Connection, cluster_id: int, fs_name: str, name: str) -> str | None:
    """The id of a subvolume of that name in the trash on that file system (any project's), or None."""
    return executor.scalar(_TRASHED_NAMESAKE, {"cluster_id": cluster_id, "fs_name": fs_name, "name": name})


def _predecessors(executor: Session | Connection, volume: CephfsPath) -> list[str]:
    return list(executor.scalars(_PREDECESSORS, {"cluster_id": volume.cluster_id, "fs_name": volume.fs_name,
                                                "path": volume.path, "volume_id": volume.id}))


def _user_goes_after(conn: CephConnection, volume: CephfsPath) -> None:
    """Remove the volume's user once its data moved or went, never before: a move that fails then leaves the volume
    with its user, and the hosts that mount it keep working. A failure here is logged, not raised (the move is
    done): the reconciler removes the users of recently deleted volumes, the purge does again, a new volume at the
    same path removes its predecessors' users before it holds data, and deleting the project removes them all."""
    try:
        _layout(volume).deauthorize(conn, volume)
    except CephError as exc:
        log.warning("a deleted volume's cephx user is left for the reconciler and the purge",
                    extra={"volume": volume.id, "user": f"client.{cephx_users.user_id(volume.id)}",
                           "error": exc.message})


class _Subvolumes:
    """The subvolume layout: subvolume <name> in its subvolume group (the project's, unless adopted from another
    group), through the mgr. Subvolumes cannot be renamed, so the trash keeps one where it is (its trash_ref is its
    path), holding its name in the group until the purge removes it. The mgr's `subvolume deauthorize` needs the
    subvolume: a removal takes the user first."""

    @staticmethod
    def path(project: str, name: str) -> str:
        # Until `fs subvolume getpath` answers: the subvolume's own directory, above the data directory the mgr
        # makes in it.
        return posixpath.join(SUBVOLUMES_ROOT, project, name)

    @staticmethod
    def reserved(executor: Session | Connection, volume: CephfsPath) -> None:
        # A subvolume's path is new every time: it has no predecessors. Its name may be held, though.
        # The mgr names an isolated subvolume's RADOS namespace after the subvolume alone (fsvolumens_<name>), not
        # its group: another project's subvolume of the same name would share it, and either's cephx user could
        # reach the other's objects through RADOS. Live names are unique per file system (an index); a subvolume in
        # the trash keeps its name, and its data, until its purge.
        if trashed_namesake(executor, volume.cluster_id, volume.fs_name, volume.name) is not None:
            raise Conflict(f"a CephFS subvolume named {volume.name!r} is in the trash on file system "
                           f"{volume.fs_name!r} (of this project or another) and keeps its name there until it is "
                           "purged; choose another name", code="name_taken",
                           details={"name": volume.name, "fs": volume.fs_name, "in_trash": True})

    @staticmethod
    def create(conn: CephConnection, volume: CephfsPath) -> dict:
        return {"path": subvolumes.create(conn, volume.fs_name, volume.subvolume_group, volume.name, volume.size_bytes,
                                          volume.id)}

    @staticmethod
    def resize(conn: CephConnection, volume: CephfsPath, size_bytes: int) -> None:
        subvolumes.resize(conn, volume.fs_name, volume.subvolume_group, volume.name, size_bytes)

    @staticmethod
    def authorize(conn: CephConnection, volume: CephfsPath) -> VolumeUser:
        return cephx_users.authorize_subvolume(conn, volume.fs_name, volume.subvolume_group, volume.name,
                                               volume.path, volume.id)

    @staticmethod
    def deauthorize(conn: CephConnection, volume: CephfsPath) -> None:
        if volume.clone_of is not None:
            # A clone being copied has no user (it cannot be mounted yet) and refuses the mgr's deauthorize.
            cephx_users.deauthorize(conn, volume.id)
            return
        cephx_users.deauthorize_subvolume(conn, volume.fs_name, volume.subvolume_group, volume.name, volume.id)

    @staticmethod
    def remove(conn: CephConnection, volume: CephfsPath) -> None:
        _Subvolumes.deauthorize(conn, volume)
        if volume.clone_of is not None:
            # A clone robin started (one whose name was taken never gets here): stop the copy, remove what it made.
            subvolumes.cancel_clone(conn, volume.fs_name, volume.subvolume_group, volume.name)
            subvolumes.remove(conn, volume.fs_name, volume.subvolume_group, volume.name)
            return
        # Only robin's own: the subvolume of a create that failed on finding a foreign one is never reached here.
        if subvolumes.inspect(conn, volume.fs_name, volume.subvolume_group, volume.name).owner in (volume.id, None):
            subvolumes.remove(conn, volume.fs_name, volume.subvolume_group, volume.name)

    @staticmethod
    def inspect(conn: CephConnection, volume: CephfsPath) -> rbd_ops.Observed:
        return subvolumes.inspect(conn, volume.fs_name, volume.subvolume_group, volume.name)

    @staticmethod
    def mark_owner(conn: CephConnection, volume: CephfsPath) -> None:
        subvolumes.mark_owner(conn, volume.fs_name, volume.subvolume_group, volume.name, volume.id)

    @staticmethod
    def snapshot_exists(conn: CephConnection, volume: CephfsPath, snapshot: str) -> bool:
        return subvolumes.snapshot_exists(conn, volume.fs_name, volume.subvolume_group, volume.name, snapshot)

    @staticmethod
    def trash(conn: CephConnection, volume: CephfsPath) -> str | None:
        subvolumes.exists(conn, volume.fs_name, volume.subvolume_group, volume.name, volume.id)
        return volume.path

    @staticmethod
    def restore(conn: CephConnection, volume: CephfsPath) -> None:
        subvolumes.exists(conn, volume.fs_name, volume.subvolume_group, volume.name, volume.id)

    @staticmethod
    def purge(conn: CephConnection, volume: CephfsPath) -> None:
        _Subvolumes.remove(conn, volume)

    @staticmethod
    def create_snapshot(conn: CephConnection, volume: CephfsPath, snapshot: str) -> None:
        subvolumes.create_snapshot(conn, volume.fs_name, volume.subvolume_group, volume.name, snapshot)

    @staticmethod
    def remove_snapshot(conn: CephConnection, volume: CephfsPath, snapshot: str) -> None:
        subvolumes.remove_snapshot(conn, volume.fs_name, volume.subvolume_group, volume.name, snapshot)


# Where the mgr's volumes module keeps subvolumes: /volumes/<group>/<name>.
SUBVOLUMES_ROOT = "/volumes"
LAYOUTS = {config.CEPHFS_DIRECTORY: _Directories(), config.CEPHFS_SUBVOLUME: _Subvolumes()}


def _layout(volume: CephfsPath):
    return LAYOUTS[volume.layout]


class CephfsKind:
    model = CephfsPath
    noun = "CephFS path"
    snapshot_fk, snapshot_relation = "cephfs_path_id", "cephfs_path"
    # A lower quota refuses further writes; it deletes nothing.
    shrink_destroys_data = False

    @staticmethod
    def placement(spec: dict, project: str) -> dict:
        settings = config.current()
        fs_name = _choose("fs", spec.get("fs"), settings.cephfs_default_fs, settings.cephfs_filesystems,
                          "ROBIN_CEPHFS_FILESYSTEMS")
        layout = settings.cephfs_layout(fs_name)
        group = project if layout == config.CEPHFS_SUBVOLUME else None
        return {"fs_name": fs_name, "layout": layout, "subvolume_group": group,
                "path": LAYOUTS[layout].path(project, spec["name"])}

    @staticmethod
    def reserved(executor: Session | Connection, volume: CephfsPath) -> None:
        _layout(volume).reserved(executor, volume)

    @staticmethod
    def create(conn: CephConnection, volume: CephfsPath) -> dict:
        return _layout(volume).create(conn, volume)

    @staticmethod
    def resize(conn: CephConnection, volume: CephfsPath, size_bytes: int) -> None:
        _layout(volume).resize(conn, volume, size_bytes)

    @staticmethod
    def remove(conn: CephConnection, volume: CephfsPath) -> None:
        _layout(volume).remove(conn, volume)  # the path's own cephx user with it, in the layout's order

    @staticmethod
    def authorize(conn: CephConnection, volume: CephfsPath) -> VolumeUser:
        """The volume's own cephx user (robin.ceph.cephx_users), made if need be."""
        return _layout(volume).authorize(conn, volume)

    @staticmethod
    def deauthorize(conn: CephConnection, volume: CephfsPath) -> None:
        _layout(volume).deauthorize(conn, volume)

    @staticmethod
    def used_bytes(conn: CephConnection, volume: CephfsPath) -> int:
        # Either layout's path is a directory whose recursive bytes the MDS accounts.
        return cephfs_ops.used_bytes(conn, volume.fs_name, volume.path)

    @staticmethod
    def inspect(conn: CephConnection, volume: CephfsPath) -> rbd_ops.Observed:
        return _layout(volume).inspect(conn, volume)

    @staticmethod
    def mark_owner(conn: CephConnection, volume: CephfsPath) -> None:
        _layout(volume).mark_owner(conn, volume)

    @staticmethod
    def snapshot_exists(conn: CephConnection, volume: CephfsPath, snapshot: str) -> bool:
        return _layout(volume).snapshot_exists(conn, volume, snapshot)

    @staticmethod
    def trash(conn: CephConnection, volume: CephfsPath, delay_s: int) -> str | None:
        trash_ref = _layout(volume).trash(conn, volume)
        _user_goes_after(conn, volume)  # a restored path gets a new user on its next mount
        return trash_ref

    @staticmethod
    def restore(conn: CephConnection, volume: CephfsPath) -> None:
        _layout(volume).restore(conn, volume)

    @staticmethod
    def purge(conn: CephConnection, volume: CephfsPath) -> None:
        _layout(volume).purge(conn, volume)

    @staticmethod
    def create_snapshot(conn: CephConnection, volume: CephfsPath, snapshot: str) -> None:
        _layout(volume).create_snapshot(conn, volume, snapshot)

    @staticmethod
    def remove_snapshot(conn: CephConnection, volume: CephfsPath, snapshot: str) -> None:
        _layout(volume).remove_snapshot(conn, volume, snapshot)


RBD = RbdKind()
CEPHFS = CephfsKind()
KINDS: tuple[Kind, ...] = (RBD, CEPHFS)


def kind_of(volume: Volume) -> Kind:
    return RBD if isinstance(volume, RbdImage) else CEPHFS
