"""A volume to stage: where it is (an RBD image, or a CephFS path), the cluster's monitors, and the cephx user and
key the daemons use; and its directory on the host.

Each volume has a directory `<state_dir>/<volume id made safe>-<hash>/` holding its ceph.conf (the monitors),
a 0600 keyring (the user and key), its daemons' logs, the record of how it was staged (stage.json), and for rbd-fuse
the mountpoint where the image shows up as a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from robin.mounts import system
from robin.mounts.errors import INVALID, MountError
from robin.mounts.system import ToolError

CLIENT_MOUNT_TIMEOUT_S = 30  # ceph-fuse gives up on unreachable monitors or MDS after this (default 300)
MONITOR = re.compile(r"(v[12]:)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(\d+))?")
CEPH_USER = re.compile(r"[A-Za-z0-9._-]+")
CEPH_KEY = re.compile(r"[A-Za-z0-9+/]+={0,2}")
MSGR2_PORT = "3300"
CEPHFS_MOUNTERS = ("kernel", "fuse")  # a CephFS volume's `mounter`; unset: the kernel's client where there is one
# One mount option of kernelMountOptions / fuseMountOptions: a name, and perhaps a plain value. Never a comma.
MOUNT_OPTION = re.compile(r"[a-z][a-z0-9_]*(=[A-Za-z0-9_.:/+-]+)?")
# What staging sets itself (the user, its key, the file system, the cluster, the mount's name): not to be overridden.
RESERVED_OPTIONS = {"name", "secret", "secretfile", "key", "mds_namespace", "fs", "fsid", "mon_addr", "fsname",
                    "client_fs", "keyring", "conf", "id"}


def _invalid(message: str) -> MountError:
    return MountError(INVALID, message)


def _mon_host(monitors: list[str]) -> str:
    """mon_host for the monitors' `ip:port`s. An address without a protocol makes the client try msgr2 first even
    on a v1 port (an error in every log): say v2 for Ceph's msgr2 port, v1 for any other."""
    spelled = []
    for monitor in monitors:
        match = MONITOR.fullmatch(monitor)
        if match.group(1) or not match.group(4):
            spelled.append(monitor)
        else:
            spelled.append(("v2:" if match.group(4) == MSGR2_PORT else "v1:") + monitor)
    return ",".join(spelled)


@dataclass(frozen=True)
class Volume:
    """What staging needs, from a volume context (CSI's, or one robin's programs write) and its secrets."""

    id: str
    kind: str  # rbd | cephfs
    monitors: list[str]
    fsid: str
    user: str
    key: str
    pool: str = ""
    image: str = ""
    fs_name: str = ""
    path: str = ""
    mounter: str = ""  # CephFS: kernel, fuse, or "" for the kernel's client where this host has it
    kernel_options: tuple[str, ...] = ()  # CephFS: more of mount(8)'s -o for the kernel client (ms_mode=...)
    fuse_options: tuple[str, ...] = ()  # CephFS: more of ceph-fuse's -o

    @classmethod
    def from_context(cls, volume_id: str, context: Mapping[str, str], secrets: Mapping[str, str]) -> Volume:
        """context: type, monitors ("ip:port,..."), clusterID (the fsid), and pool + imageName or fsName + path;
        secrets: userID and userKey. Nothing a tenant could set reaches a daemon's command line unchecked."""
        kind = context.get("type") or volume_id.split(":", 1)[0]
        if kind not in ("rbd", "cephfs"):
            raise _invalid(f"volume_context type must be rbd or cephfs, not {kind!r}")
        monitors = [m.strip() for m in context.get("monitors", "").split(",") if m.strip()]
        if not monitors:
            raise _invalid("volume_context has no monitors: the node needs the cluster's monitors (ip:port, ...)")
        for monitor in monitors:
            if not MONITOR.fullmatch(monitor):
                raise _invalid(f"volume_context monitors: {monitor!r} is not an ip:port")
        user, key = secrets.get("userID", ""), secrets.get("userKey", "")
        if not user or not key:
            raise _invalid("secrets must hold userID and userKey (a Ceph user and its key: the node-stage secret)")
        if not CEPH_USER.fullmatch(user) or not CEPH_KEY.fullmatch(key):
            raise _invalid("secrets: userID must be a Ceph user name and userKey a base64 Ceph key")
        fsid = context.get("clusterID", "")
        volume = cls(id=volume_id, kind=kind, monitors=monitors, fsid=fsid if _is_uuid(fsid) else "",
                     user=user, key=key, pool=context.get("pool", ""), image=context.get("imageName", ""),
                     fs_name=context.get("fsName", ""), path=context.get("path", ""),
                     **(_cephfs_mount(context) if kind == "cephfs" else {}))
        volume._check_location(context)
        return volume

    def _check_location(self, context: Mapping[str, str]) -> None:
        if self.kind == "rbd":
            if not self.pool or not self.image or "/" in self.pool + self.image:
                raise _invalid(f"volume_context needs pool and imageName for an RBD volume, got {dict(context)}")
        elif not self.fs_name or not self.path.startswith("/"):
            raise _invalid(f"volume_context needs fsName and an absolute path for a CephFS volume, got {dict(context)}")


def _cephfs_mount(context: Mapping[str, str]) -> dict:
    """How the volume context asks a CephFS volume to be mounted: mounter, kernelMountOptions, fuseMountOptions."""
    mounter = context.get("mounter", "")
    if mounter not in ("", *CEPHFS_MOUNTERS):
        raise _invalid(f"volume_context mounter must be kernel or fuse (or unset: the kernel's client where the "
                       f"node has it), not {mounter!r}")
    return {"mounter": mounter, "kernel_options": _mount_options(context, "kernelMountOptions"),
            "fuse_options": _mount_options(context, "fuseMountOptions")}


def _mount_options(context: Mapping[str, str], key: str) -> tuple[str, ...]:
    """A comma-separated list of plain mount options; none that would replace what staging sets itself."""
    options = tuple(option.strip() for option in context.get(key, "").split(",") if option.strip())
    for option in options:
        if not MOUNT_OPTION.fullmatch(option):
            raise _invalid(f"volume_context {key}: {option!r} is not a mount option (name or name=value)")
        if option.split("=", 1)[0] in RESERVED_OPTIONS:
            raise _invalid(f"volume_context {key}: {option.split('=', 1)[0]} is set by the node itself "
                           f"(from the secrets and the volume context), not by mount options")
    return options


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Capability:
    """How the volume is used: as a block device, or as a file system (`fs_type`, "" for what is on it or ext4)
    mounted with `flags`. `multi_writer`: several hosts write to it at once."""

    block: bool = False
    fs_type: str = ""
    flags: tuple[str, ...] = ()
    readonly: bool = False
    multi_writer: bool = False


@dataclass(frozen=True)
class Access:
    """How the daemons reach the cluster: the monitors, the fsid, a cephx user and its key."""

    monitors: list[str]
    fsid: str
    user: str
    key: str

    def volume(self, volume_id: str, where: Mapping[str, str]) -> Volume:
        """The volume at `where` (type and pool + imageName, or fsName + path), checked as a CSI request's is."""
        context = {"monitors": ",".join(self.monitors), "clusterID": self.fsid, **where}
        return Volume.from_context(volume_id, context, {"userID": self.user, "userKey": self.key})


class VolumeDir:
    """<state_dir>/<safe id>-<hash>: the hash keeps two ids that read the same once made safe apart."""

    def __init__(self, state_dir: str, volume_id: str):
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", volume_id)[:64]
        self.name = f"{safe}-{hashlib.sha256(volume_id.encode()).hexdigest()[:12]}"
        self.path = os.path.join(state_dir, self.name)
        self.conf = os.path.join(self.path, "ceph.conf")
        self.keyring = os.path.join(self.path, "keyring")
        self.fuse = os.path.join(self.path, "fuse")  # rbd-fuse's mountpoint
        self.image_record = os.path.join(self.path, "image")  # pool/image, for the kernel mappers' device lists
        self.secret = os.path.join(self.path, "secret")  # the key alone: the kernel CephFS client's secretfile
        # The device string of a kernel CephFS mount, as the mount table shows it: which ceph mount is this volume's.
        self.kernel_record = os.path.join(self.path, "kernel-source")
        # How the volume was staged (no key): what a stage whose FUSE daemon died is mounted again from.
        self.stage_record = os.path.join(self.path, "stage.json")
        self.tag = f"robin-csi:{self.name}"  # ceph-fuse's fsname: the source column of its mounts names the volume

    def log(self, daemon: str) -> str:
        return os.path.join(self.path, f"{daemon}.log")

    def prepare(self, volume: Volume) -> None:
        """Write the volume's ceph.conf, keyring and image record (again: a retried stage may bring a new key)."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        conf = ["[global]", f"mon_host = {_mon_host(volume.monitors)}", f"keyring = {self.keyring}",
                # No admin socket: the default run dir may not exist on a node, and a socket path is short.
                "admin_socket =", f"log_file = {self.log('ceph-client')}",
                f"client_mount_timeout = {CLIENT_MOUNT_TIMEOUT_S}",
                # POSIX ACLs stored and enforced (ceph-fuse's default is neither): a volume migrated with its ACLs
                # gives the workload the permissions it had.
                "client_acl_type = posix_acl"]
        if volume.fsid:
            conf.insert(1, f"fsid = {volume.fsid}")  # the client then refuses monitors of another cluster
        self._write(self.keyring, f"[client.{volume.user}]\n\tkey = {volume.key}\n")
        self._write(self.conf, "\n".join(conf) + "\n")
        if volume.kind == "rbd":
            self._write(self.image_record, f"{volume.pool}/{volume.image}\n")
        else:
            self._write(self.secret, volume.key + "\n")

    def record_stage(self, record: dict) -> None:
        self._write(self.stage_record, json.dumps(record, sort_keys=True) + "\n")

    def recorded_stage(self) -> dict | None:
        """The stage record, or None: never staged here, or staged by a plugin that kept none."""
        try:
            with open(self.stage_record) as handle:
                return json.load(handle)
        except (FileNotFoundError, ValueError):
            return None

    def record_kernel_mount(self, source: str) -> None:
        self._write(self.kernel_record, source + "\n")

    def kernel_mount(self) -> str | None:
        """The device string of the volume's kernel CephFS mount, if it was mounted so."""
        try:
            with open(self.kernel_record) as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return None

    @staticmethod
    def _write(path: str, text: str) -> None:
        # 0600 from the start, and in place at once: a daemon reading it never sees half a file.
        temporary = path + ".tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # in case a crashed predecessor left the file
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)

    def user(self) -> str:
        with open(self.keyring) as handle:
            return handle.readline().strip()[len("[client."):-1]

    def key(self) -> str:
        with open(self.keyring) as handle:
            return handle.read().split("key = ", 1)[1].strip()

    def image(self) -> tuple[str, str] | None:
        try:
            with open(self.image_record) as handle:
                pool, image = handle.read().strip().split("/", 1)
        except (FileNotFoundError, ValueError):
            return None
        return pool, image

    def remove(self) -> None:
        """Delete the directory: only files, and the empty FUSE mountpoint, never while anything is mounted in it."""
        if not os.path.isdir(self.path):
            return
        left = system.mounts_under(self.path)
        if left:
            raise ToolError(f"{', '.join(m.mountpoint for m in left)} is still mounted: {self.path} kept")
        for entry in os.scandir(self.path):
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        os.rmdir(self.path)
