"""Destination volumes: made through robin's API (so quotas, states and audit are robin's own), then mounted on
this host by the staging code the CSI node service uses (robin.mounts), as a node would: ceph-fuse at the CephFS
path, or the RBD image mapped (rbd-fuse + a loop device, krbd, rbd-nbd) with a file system made on it only while it
is blank."""
from __future__ import annotations

import configparser
import os
from contextlib import contextmanager

from robin.ceph import CephError, rbd_ops
from robin.ceph.connection import CephConnection
from robin.client import RobinClient, VolumeRef
from robin.migrate.errors import MigrationError
from robin.migrate.gluster import remove_empty_dir
from robin.mounts import Access, Host, MountError
from robin.mounts.errors import REFUSED

RBD_FS_TYPE = "ext4"
EXT4_RESERVED = frozenset({"lost+found"})  # made by mkfs.ext4 at the root: never the source's, never removed
CEPH_TIMEOUT_S = 30.0  # for asking the cluster who uses an image


class DestinationError(MigrationError):
    """A destination that cannot be reached, keyed or mounted."""


def read_key(keyring_path: str, user: str) -> str:
    """The key of client.<user> in a Ceph keyring file."""
    keyring = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        with open(keyring_path) as handle:
            keyring.read_file(handle)
        return keyring.get(f"client.{user}", "key").strip()
    except (OSError, configparser.Error) as exc:
        raise DestinationError("ceph_key_unavailable", f"no key for client.{user} in {keyring_path}: {exc}") from exc


def default_keyring(ceph_conf: str, user: str) -> str:
    """The keyring the ceph.conf names ([global] keyring), else Ceph's default path for the user."""
    conf = configparser.ConfigParser(strict=False, interpolation=None)
    conf.read(ceph_conf)
    named = conf.get("global", "keyring", fallback="") or conf.get("client", "keyring", fallback="")
    if named:
        return named.replace("$cluster", "ceph").replace("$name", f"client.{user}")
    return f"/etc/ceph/ceph.client.{user}.keyring"


def access(client: RobinClient, cluster: str, user: str, key: str) -> Access:
    """The cluster's monitors and fsid, as robin describes them, with this host's cephx user."""
    described = client.get_cluster(cluster)
    if not described.get("monitors"):
        raise DestinationError("cluster_unreachable", f"robin does not know cluster {cluster!r}'s monitors: "
                                                      f"{described.get('error') or 'it is unreachable'}")
    return Access(list(described["monitors"]), described.get("fsid", ""), user, key)


def rbd_users(ceph: Access, cluster: str, volume: dict) -> list[str]:
    """Who has the destination image open or locked (a node that maps it, the gateway that serves it): its watchers
    and lock owners, as robin's own in-use check sees them, asked with this host's cephx identity."""
    conn = CephConnection(cluster, {"mon_host": ",".join(ceph.monitors), "cephx_key": ceph.key,
                                    "client_id": ceph.user}, CEPH_TIMEOUT_S)
    try:
        return rbd_ops.users(conn, volume["pool"], volume["name"])
    except CephError as exc:
        raise DestinationError("destination_unchecked", f"cannot tell who uses {volume['pool']}/{volume['name']}: "
                                                        f"{exc.message}") from exc
    finally:
        conn.close()


def where(ref: VolumeRef, volume: dict) -> dict:
    if ref.kind == "rbd":
        return {"type": "rbd", "pool": volume["pool"], "imageName": volume["name"]}
    return {"type": "cephfs", "fsName": volume["fs"], "path": volume["path"]}


def mountpoint(work_dir: str) -> str:
    return os.path.join(work_dir, "destination")


@contextmanager
def mounted(host: Host, ref: VolumeRef, volume: dict, ceph: Access, work_dir: str, fs_type: str = RBD_FS_TYPE):
    """The destination, read-write, for as long as the block runs; unmounted, its daemons stopped and its
    mountpoint removed after."""
    path = mountpoint(work_dir)
    os.makedirs(path, exist_ok=True)
    volume_id = f"migrate-{ref.handle}"
    try:
        host.stage(volume_id, path, where(ref, volume), ceph, fs_type if ref.kind == "rbd" else "")
    except MountError as exc:
        remove_empty_dir(path)
        code = "destination_busy" if exc.kind == REFUSED else "destination_mount_failed"
        raise DestinationError(code, f"cannot mount {ref.handle}: {exc.message}") from exc
    try:
        yield path
    finally:
        host.unstage(volume_id, path)
        remove_empty_dir(path)
