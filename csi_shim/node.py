"""The Node service: stage (map or mount) a volume once per node, publish it (bind mounts) to each workload's path.

RBD images become block devices through the configured mounter (`rbd-fuse` + a loop device, `krbd`, `rbd-nbd`);
a blank image gets a file system (ext4 unless the capability names xfs), an image with anything on it never does.
CephFS volumes are mounted with ceph-fuse, exactly at the volume's path of its file system.

Nothing is remembered between calls: whether a volume is staged or published, and on which device, is read from
the mount table and the loop devices' backing files each time, so a plugin restarted between two calls carries on
where the last one stopped, and the FUSE daemons (in their own sessions) keep the mounts working meanwhile.

Each volume has a directory `<state_dir>/<volume id made safe>-<hash>/` holding its ceph.conf (the monitors from
the volume context), a 0600 keyring (the node-stage secret's userID and userKey), its daemons' logs, and for
rbd-fuse the mountpoint where the image shows up as a file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from csi_shim.config import ShimConfig
from csi_shim.errors import CsiError, csi_service, invalid, not_found
from csi_shim.locks import InFlight
from csi_shim.stubs import pb, rpc
from robin.mounts import system as mounts
from robin.mounts.errors import MountError
from robin.mounts.system import Daemons, Mount, ToolError, canonical, device_number, mount_at

log = logging.getLogger("csi_shim")

MOUNT_TIMEOUT_S = 60  # a FUSE daemon connecting to the cluster and showing the volume
CLIENT_MOUNT_TIMEOUT_S = 30  # ceph-fuse gives up on unreachable monitors or MDS after this (default 300)
Mode = pb.VolumeCapability.AccessMode
READER_ONLY = (Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY)
MONITOR = re.compile(r"(v[12]:)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(\d+))?")
CEPH_USER = re.compile(r"[A-Za-z0-9._-]+")
CEPH_KEY = re.compile(r"[A-Za-z0-9+/]+={0,2}")
MSGR2_PORT = "3300"


def _failed_precondition(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.FAILED_PRECONDITION, message)


def _already_exists(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.ALREADY_EXISTS, message)


def _required(value: str, name: str) -> str:
    if not value:
        raise invalid(f"{name} is required")
    return value


@contextmanager
def _os_errors(call: str, volume_id: str):
    """A path that cannot be made, read or removed ends the call with INTERNAL and what failed (gRPC would say
    UNKNOWN with no detail)."""
    try:
        yield
    except OSError as exc:
        raise ToolError(f"{call} {volume_id}: {exc}") from exc


def _capability(request) -> pb.VolumeCapability:
    if not request.HasField("volume_capability"):
        raise invalid("volume_capability is required")
    if request.volume_capability.WhichOneof("access_type") is None:
        raise invalid("volume_capability needs an access type: mount or block")
    return request.volume_capability


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
    """What NodeStageVolume needs, from its volume_context and secrets."""

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

    @classmethod
    def from_request(cls, request) -> Volume:
        context, secrets = request.volume_context, request.secrets
        kind = context.get("type") or request.volume_id.split(":", 1)[0]
        if kind not in ("rbd", "cephfs"):
            raise invalid(f"volume_context type must be rbd or cephfs, not {kind!r}")
        monitors = [m.strip() for m in context.get("monitors", "").split(",") if m.strip()]
        if not monitors:
            raise invalid("volume_context has no monitors: the node needs the cluster's monitors (ip:port, ...)")
        for monitor in monitors:
            if not MONITOR.fullmatch(monitor):
                raise invalid(f"volume_context monitors: {monitor!r} is not an ip:port")
        user, key = secrets.get("userID", ""), secrets.get("userKey", "")
        if not user or not key:
            raise invalid("secrets must hold userID and userKey (a Ceph user and its key: the node-stage secret)")
        if not CEPH_USER.fullmatch(user) or not CEPH_KEY.fullmatch(key):
            raise invalid("secrets: userID must be a Ceph user name and userKey a base64 Ceph key")
        fsid = context.get("clusterID", "")
        volume = cls(id=request.volume_id, kind=kind, monitors=monitors, fsid=fsid if _is_uuid(fsid) else "",
                     user=user, key=key, pool=context.get("pool", ""), image=context.get("imageName", ""),
                     fs_name=context.get("fsName", ""), path=context.get("path", ""))
        volume._check_location(context)
        return volume

    def _check_location(self, context) -> None:
        if self.kind == "rbd":
            if not self.pool or not self.image or "/" in self.pool + self.image:
                raise invalid(f"volume_context needs pool and imageName for an RBD volume, got {dict(context)}")
        elif not self.fs_name or not self.path.startswith("/"):
            raise invalid(f"volume_context needs fsName and an absolute path for a CephFS volume, got {dict(context)}")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class VolumeDir:
    """<state_dir>/<safe id>-<hash>: the hash keeps two ids that read the same once made safe apart."""

    def __init__(self, state_dir: str, volume_id: str):
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", volume_id)[:64]
        self.name = f"{safe}-{hashlib.sha256(volume_id.encode()).hexdigest()[:12]}"
        self.path = os.path.join(state_dir, self.name)
        self.conf = os.path.join(self.path, "ceph.conf")
        self.keyring = os.path.join(self.path, "keyring")
        self.fuse = os.path.join(self.path, "fuse")  # rbd-fuse's mountpoint
        self.image_record = os.path.join(self.path, "image")  # pool/image, for the kernel mounters' device lists
        self.tag = f"robin-csi:{self.name}"  # ceph-fuse's fsname: the source column of its mounts names the volume

    def log(self, daemon: str) -> str:
        return os.path.join(self.path, f"{daemon}.log")

    def prepare(self, volume: Volume) -> None:
        """Write the volume's ceph.conf, keyring and image record (again: a retried stage may bring a new key)."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        conf = ["[global]", f"mon_host = {_mon_host(volume.monitors)}", f"keyring = {self.keyring}",
                # No admin socket: the default run dir may not exist on a node, and a socket path is short.
                "admin_socket =", f"log_file = {self.log('ceph-client')}",
                f"client_mount_timeout = {CLIENT_MOUNT_TIMEOUT_S}"]
        if volume.fsid:
            conf.insert(1, f"fsid = {volume.fsid}")  # the client then refuses monitors of another cluster
        self._write(self.keyring, f"[client.{volume.user}]\n\tkey = {volume.key}\n")
        self._write(self.conf, "\n".join(conf) + "\n")
        if volume.kind == "rbd":
            self._write(self.image_record, f"{volume.pool}/{volume.image}\n")

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
        left = mounts.mounts_under(self.path)
        if left:
            raise ToolError(f"{', '.join(m.mountpoint for m in left)} is still mounted: {self.path} kept")
        for entry in os.scandir(self.path):
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        os.rmdir(self.path)


# --- RBD mounters: an image as a block device -------------------------------------------------------------


class RbdFuse:
    """rbd-fuse shows the image as a file under the volume directory; a loop device makes that file a block
    device. For nodes without the rbd and nbd kernel modules (the tests' machine).

    rbd-fuse runs with attr_timeout=0: the kernel then asks it for the file's size every time instead of
    keeping it for a second, rbd-fuse answers with librbd's current size, and `losetup --set-capacity` makes
    the loop device take a grown image's new size at once."""

    def __init__(self, daemons: Daemons):
        self.daemons = daemons

    def attach(self, vdir: VolumeDir, pool: str, image: str, user: str, readonly: bool) -> str:
        return mounts.attach_loop(self._image_file(vdir, pool, image, user), readonly)

    def devices(self, vdir: VolumeDir) -> list[str]:
        prefix = canonical(vdir.fuse) + "/"
        return sorted(device for device, backing in mounts.loop_devices().items() if backing.startswith(prefix))

    def detach(self, vdir: VolumeDir, device: str) -> None:
        mounts.detach_loop(device)

    def release(self, vdir: VolumeDir) -> None:
        """Once no loop device holds the file: unmount rbd-fuse, which closes the image (flushing librbd's cache,
        dropping its lock) and exits."""
        mounts.unmount(vdir.fuse)

    def refresh(self, vdir: VolumeDir, device: str) -> None:
        mounts.refresh_loop(device)

    def _image_file(self, vdir: VolumeDir, pool: str, image: str, user: str) -> str:
        path = os.path.join(vdir.fuse, image)
        if mount_at(vdir.fuse) is not None:
            try:
                os.stat(path)
                return path  # a running rbd-fuse, perhaps started by this plugin's predecessor
            except FileNotFoundError as exc:
                raise not_found(f"RBD image {pool}/{image} does not exist") from exc
            except OSError:
                mounts.unmount(vdir.fuse)  # its daemon died ("transport endpoint is not connected"): start anew
        return self._start(vdir, pool, image, user, path)

    def _start(self, vdir: VolumeDir, pool: str, image: str, user: str, path: str) -> str:
        os.makedirs(vdir.fuse, exist_ok=True)
        pid = self.daemons.start(["rbd-fuse", "-f", "-c", vdir.conf, "--id", user, "-p", pool, "-r", image,
                                  "-o", "attr_timeout=0", vdir.fuse], vdir.log("rbd-fuse"))
        mounts.wait_for(lambda: mount_at(vdir.fuse) is not None or not self.daemons.alive(pid), MOUNT_TIMEOUT_S)
        if mount_at(vdir.fuse) is None or not self.daemons.alive(pid):
            status = self.daemons.exit_status(pid)
            self._stop(vdir, pid)
            raise ToolError(f"rbd-fuse did not mount (exit status {status}): {mounts.log_tail(vdir.log('rbd-fuse'))}")
        try:
            os.stat(path)  # the lookup connects rbd-fuse to the cluster and opens the image
            return path
        except FileNotFoundError as exc:
            self._stop(vdir, pid)
            raise not_found(f"RBD image {pool}/{image} does not exist") from exc
        except OSError as exc:
            self._stop(vdir, pid)
            raise ToolError(f"rbd-fuse did not show {pool}/{image} ({exc.strerror}): "
                            f"{mounts.log_tail(vdir.log('rbd-fuse'))}") from exc

    def _stop(self, vdir: VolumeDir, pid: int) -> None:
        mounts.unmount(vdir.fuse)
        self.daemons.stop(pid)


class _KernelMounter:
    """A mapping tool that prints the device it made and lists its mappings as JSON. The kernel mounters are
    not exercised by the tests: the machine that runs them has neither the rbd nor the nbd module."""

    tool: tuple[str, ...] = ()
    list_command: tuple[str, ...] = ()
    image_key = ""

    def __init__(self, daemons: Daemons):
        self.daemons = daemons

    def attach(self, vdir: VolumeDir, pool: str, image: str, user: str, readonly: bool) -> str:
        argv = [*self.tool, "map", f"{pool}/{image}", "-c", vdir.conf, "--id", user]
        return mounts.run(*argv, *(["--read-only"] if readonly else [])).stdout.strip()

    def devices(self, vdir: VolumeDir) -> list[str]:
        image = vdir.image()
        if image is None:
            return []
        listed = json.loads(mounts.run(*self.list_command, "--format", "json").stdout or "[]")
        return sorted(entry["device"] for entry in listed
                      if (entry.get("pool"), entry.get(self.image_key)) == image and entry.get("snap") in ("-", ""))

    def detach(self, vdir: VolumeDir, device: str) -> None:
        mounts.run(*self.tool, "unmap", device, "-c", vdir.conf)

    def release(self, vdir: VolumeDir) -> None:
        """Nothing: unmapping the last device was all."""

    def refresh(self, vdir: VolumeDir, device: str) -> None:
        """Nothing: krbd and rbd-nbd follow the image's size by themselves."""


class Krbd(_KernelMounter):
    """The kernel's RBD client: `rbd map` makes /dev/rbdN."""

    tool = ("rbd",)
    list_command = ("rbd", "device", "list")
    image_key = "name"


class RbdNbd(_KernelMounter):
    """rbd-nbd: a daemon (it daemonizes itself) serves the image as /dev/nbdN."""

    tool = ("rbd-nbd",)
    list_command = ("rbd-nbd", "list-mapped")
    image_key = "image"


MOUNTERS = {"rbd-fuse": RbdFuse, "krbd": Krbd, "rbd-nbd": RbdNbd}


# --- the service ------------------------------------------------------------------------------------------


@csi_service
class Node(rpc.NodeServicer):
    def __init__(self, config: ShimConfig):
        self.config = config
        os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
        self.state_dir = canonical(config.state_dir)  # as loop devices and the mount table spell it
        self.daemons = Daemons()
        self.mounter = MOUNTERS[config.mounter](self.daemons)
        self.in_flight = InFlight()

    def _dir(self, volume_id: str) -> VolumeDir:
        return VolumeDir(self.state_dir, volume_id)

    # --- NodeGetCapabilities, NodeGetInfo -----------------------------------------------------------------

    def NodeGetCapabilities(self, request, context):
        kinds = (pb.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME, pb.NodeServiceCapability.RPC.GET_VOLUME_STATS,
                 pb.NodeServiceCapability.RPC.EXPAND_VOLUME)
        return pb.NodeGetCapabilitiesResponse(capabilities=[
            pb.NodeServiceCapability(rpc=pb.NodeServiceCapability.RPC(type=kind)) for kind in kinds])

    def NodeGetInfo(self, request, context):
        return pb.NodeGetInfoResponse(node_id=self.config.node_id, max_volumes_per_node=0)

    # --- NodeStageVolume ----------------------------------------------------------------------------------

    def NodeStageVolume(self, request, context):
        _required(request.volume_id, "volume_id")
        staging = _required(request.staging_target_path, "staging_target_path")
        capability = _capability(request)
        volume = Volume.from_request(request)
        with self.in_flight.hold(volume.id), _os_errors("NodeStageVolume", volume.id):
            if volume.kind == "cephfs":
                self._stage_cephfs(volume, self._dir(volume.id), staging, capability)
            else:
                self._stage_rbd(volume, self._dir(volume.id), staging, capability)
        return pb.NodeStageVolumeResponse()

    def _stage_rbd(self, volume: Volume, vdir: VolumeDir, staging: str, capability) -> None:
        block = capability.HasField("block")
        if not block and capability.access_mode.mode == Mode.MULTI_NODE_MULTI_WRITER:
            raise _failed_precondition("an RBD file system cannot be written from several nodes: use block mode")
        if self._rbd_staged(vdir, staging, capability):
            return
        primary = self._primary(self.mounter.devices(vdir))
        if block and primary:
            return  # a block volume's stage is its device
        if primary and mounts.device_users(primary):
            raise _already_exists(f"{volume.id} is already in use at {', '.join(mounts.device_users(primary))}")
        try:
            vdir.prepare(volume)
            device = primary or self.mounter.attach(vdir, volume.pool, volume.image, volume.user,
                                                    capability.access_mode.mode in READER_ONLY)
            if not block:
                fs_type = self._file_system(device, capability.mount.fs_type, volume)
                os.makedirs(staging, exist_ok=True)
                mounts.mount(device, staging, fs_type, self._mount_options(capability))
        except (CsiError, MountError, OSError):
            self._undo(vdir)  # leave nothing half made: the CO may never call NodeUnstageVolume
            raise

    def _rbd_staged(self, vdir: VolumeDir, staging: str, capability) -> bool:
        """True if the volume is mounted at `staging` as asked; ALREADY_EXISTS if something else is."""
        staged = mount_at(staging)
        if staged is None:
            return False
        requested = capability.mount.fs_type
        if (capability.HasField("block") or not self._belongs(vdir, staged, staging)
                or (requested and requested != staged.fstype)):
            raise _already_exists(f"{staging} already holds {staged.source} ({staged.fstype})")
        return True

    def _undo(self, vdir: VolumeDir) -> None:
        try:
            self._release(vdir)
        except (CsiError, MountError, OSError) as exc:  # the failure that brought us here is the one to report
            log.warning("could not undo a failed stage in %s: %s", vdir.path, exc)

    @staticmethod
    def _file_system(device: str, requested: str, volume: Volume) -> str:
        """The file system on the device; a new one only on a blank image."""
        if requested and requested not in mounts.FILESYSTEMS:
            raise _failed_precondition(f"fs_type {requested!r} is not supported: {', '.join(mounts.FILESYSTEMS)}")
        found = mounts.probe(device)
        if "TYPE" in found:
            if requested and found["TYPE"] != requested:
                raise _failed_precondition(f"{volume.pool}/{volume.image} holds a {found['TYPE']} file system, "
                                           f"not {requested}")
            return found["TYPE"]
        if found:
            raise _failed_precondition(f"{volume.pool}/{volume.image} holds no file system but "
                                       f"{', '.join(f'{k}={v}' for k, v in found.items())}: not formatting it")
        if not mounts.starts_with_zeros(device):
            raise _failed_precondition(f"{volume.pool}/{volume.image} holds data but no file system blkid knows: "
                                       f"not formatting it")
        fs_type = requested or "ext4"
        log.info("making an %s file system on the blank image %s/%s (%s)", fs_type, volume.pool, volume.image,
                 device)
        mounts.make_filesystem(device, fs_type)
        return fs_type

    @staticmethod
    def _mount_options(capability) -> list[str]:
        # Last, so that they win over the capability's flags: a device node or set-id program a pod wrote into
        # its volume never acts on this host, nor in another pod. Bind mounts of the stage inherit them.
        options = [*capability.mount.mount_flags, *mounts.TENANT_DATA_OPTIONS]
        if capability.access_mode.mode in READER_ONLY:
            options.append("ro")
        return options

    def _stage_cephfs(self, volume: Volume, vdir: VolumeDir, staging: str, capability) -> None:
        if capability.HasField("block"):
            raise _failed_precondition("a CephFS volume cannot be used as a block device")
        staged = mount_at(staging)
        if staged is not None:
            if staged.source != vdir.tag:
                raise _already_exists(f"{staging} already holds {staged.source} ({staged.fstype})")
            return
        vdir.prepare(volume)
        os.makedirs(staging, exist_ok=True)
        options = ",".join([f"fsname={vdir.tag}", *self._mount_options(capability)])
        pid = self.daemons.start(["ceph-fuse", "-f", "-c", vdir.conf, "--id", volume.user, "--client_fs",
                                  volume.fs_name, "-r", volume.path, "-o", options, staging], vdir.log("ceph-fuse"))

        def mounted() -> bool:
            current = mount_at(staging)
            return current is not None and current.source == vdir.tag

        mounts.wait_for(lambda: mounted() or not self.daemons.alive(pid), MOUNT_TIMEOUT_S)
        if mounted() and self.daemons.alive(pid):
            return
        self._cephfs_failed(volume, vdir, staging, pid)

    def _cephfs_failed(self, volume: Volume, vdir: VolumeDir, staging: str, pid: int) -> None:
        said = mounts.log_tail(vdir.log("ceph-fuse"))
        status = self.daemons.exit_status(pid)
        if mount_at(staging) is not None and mount_at(staging).source == vdir.tag:
            mounts.unmount(staging)
        self.daemons.stop(pid)
        vdir.remove()
        if "No such file or directory" in said:
            raise not_found(f"CephFS {volume.fs_name}:{volume.path} does not exist: {said}")
        raise ToolError(f"ceph-fuse did not mount {volume.fs_name}:{volume.path} (exit status {status}): {said}")

    # --- NodeUnstageVolume --------------------------------------------------------------------------------

    def NodeUnstageVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        staging = _required(request.staging_target_path, "staging_target_path")
        vdir = self._dir(volume_id)
        with self.in_flight.hold(volume_id), _os_errors("NodeUnstageVolume", volume_id):
            daemons = self.daemons.using(vdir.conf)  # looked up first: once unmounted they are on their way out
            staged = mount_at(staging)
            if staged is not None and self._belongs(vdir, staged, staging):
                others = [m.mountpoint for m in mounts.mount_table()
                          if m.device == staged.device and m.mountpoint != staged.mountpoint]
                if others:
                    raise _failed_precondition(f"{volume_id} is still published at {', '.join(others)}")
                mounts.unmount(staging)
            self._release(vdir, daemons)
        return pb.NodeUnstageVolumeResponse()

    def _release(self, vdir: VolumeDir, daemons: list[int] | None = None) -> None:
        """Detach the volume's devices, stop its daemons, remove its directory: whatever of it is there."""
        if daemons is None:
            daemons = self.daemons.using(vdir.conf)
        for device in self.mounter.devices(vdir):
            users = mounts.device_users(device)
            if users:
                raise _failed_precondition(f"{device} is still in use at {', '.join(users)}")
            self.mounter.detach(vdir, device)
        self.mounter.release(vdir)
        self.daemons.wait_gone(daemons)
        vdir.remove()

    # --- NodePublishVolume, NodeUnpublishVolume -----------------------------------------------------------

    def NodePublishVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        target = _required(request.target_path, "target_path")
        capability = _capability(request)
        staging = request.staging_target_path
        if not staging:
            raise _failed_precondition("staging_target_path is required: this plugin stages volumes")
        vdir = self._dir(volume_id)
        block = capability.HasField("block")
        with self.in_flight.hold(volume_id), _os_errors("NodePublishVolume", volume_id):
            published = mount_at(target)
            if published is not None:
                if self._belongs(vdir, published, target) and published.readonly == request.readonly:
                    return pb.NodePublishVolumeResponse()
                raise _already_exists(f"{target} already holds {published.source} "
                                      f"({'read-only' if published.readonly else 'read-write'})")
            self._check_staged(vdir, volume_id, staging, block)
            source, own_device = self._block_source(vdir, request.readonly) if block else (canonical(staging), False)
            try:
                self._make_target(target, block)
                mounts.bind(source, target, request.readonly, device=block)
            except (CsiError, MountError, OSError):
                self._remove_target(target)
                if own_device:
                    self.mounter.detach(vdir, source)
                raise
        return pb.NodePublishVolumeResponse()

    def _check_staged(self, vdir: VolumeDir, volume_id: str, staging: str, block: bool) -> None:
        staged = mount_at(staging)
        mounted = staged is not None and self._belongs(vdir, staged, staging)
        if block and mounted:
            raise _failed_precondition(f"{volume_id} is staged as a file system at {staging}, not as a block device")
        if not block and not mounted:
            raise _failed_precondition(f"{volume_id} is not staged at {staging}: call NodeStageVolume first")

    def _block_source(self, vdir: VolumeDir, readonly: bool) -> tuple[str, bool]:
        """The device to bind, and whether it was attached for this target alone."""
        primary = self._primary(self.mounter.devices(vdir))
        image = vdir.image()
        if primary is None or image is None:
            raise _failed_precondition(f"no device is attached for {vdir.path}: call NodeStageVolume first")
        if not readonly or mounts.device_readonly(primary):
            return primary, False
        # A read-only bind mount of a device node still lets writes through: this target gets a device of its
        # own, attached read-only, which NodeUnpublishVolume detaches again.
        return self.mounter.attach(vdir, *image, vdir.user(), readonly=True), True

    @staticmethod
    def _make_target(target: str, block: bool) -> None:
        if block:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()  # a device node is bound onto a file
        else:
            os.makedirs(target, exist_ok=True)

    def NodeUnpublishVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        target = _required(request.target_path, "target_path")
        vdir = self._dir(volume_id)
        with self.in_flight.hold(volume_id), _os_errors("NodeUnpublishVolume", volume_id):
            own_device = self._own_readonly_device(vdir, target)
            mounts.unmount(target)
            if own_device and not mounts.device_users(own_device):
                self.mounter.detach(vdir, own_device)
            self._remove_target(target)
        return pb.NodeUnpublishVolumeResponse()

    def _own_readonly_device(self, vdir: VolumeDir, target: str) -> str | None:
        """The read-only device NodePublishVolume attached for this block target alone, if it did."""
        published = mount_at(target)
        if published is None or published.fstype != "devtmpfs":
            return None
        devices = self.mounter.devices(vdir)
        primary, number = self._primary(devices), device_number(target)
        return next((d for d in devices if d != primary and device_number(d) == number
                     and mounts.device_readonly(d)), None)

    @staticmethod
    def _remove_target(target: str) -> None:
        """Remove what NodePublishVolume made: an empty directory or a file, never anything with content."""
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                os.rmdir(target)
            else:
                os.unlink(target)
        except FileNotFoundError:
            pass

    # --- NodeGetVolumeStats, NodeExpandVolume -------------------------------------------------------------

    def NodeGetVolumeStats(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        path = _required(request.volume_path, "volume_path")
        with _os_errors("NodeGetVolumeStats", volume_id):
            self._mounted_volume(self._dir(volume_id), volume_id, path)
            if device_number(path):
                return pb.NodeGetVolumeStatsResponse(usage=[
                    pb.VolumeUsage(total=mounts.device_size(path), unit=pb.VolumeUsage.BYTES)])
            return pb.NodeGetVolumeStatsResponse(usage=_usage(os.statvfs(path)))

    def NodeExpandVolume(self, request, context):
        volume_id = _required(request.volume_id, "volume_id")
        path = _required(request.volume_path, "volume_path")
        vdir = self._dir(volume_id)
        with self.in_flight.hold(volume_id), _os_errors("NodeExpandVolume", volume_id):
            mounted = self._mounted_volume(vdir, volume_id, path)
            if mounted.source == vdir.tag:  # CephFS: the quota is the size, nothing to grow on a node
                statistics = os.statvfs(path)
                return pb.NodeExpandVolumeResponse(capacity_bytes=statistics.f_blocks * statistics.f_frsize)
            for device in self.mounter.devices(vdir):
                self.mounter.refresh(vdir, device)
            if mounted.fstype == "devtmpfs":  # a block volume: the device is all there is
                return pb.NodeExpandVolumeResponse(capacity_bytes=_capacity(volume_id, path, request))
            device = mounts.device_path(mounted.device)
            mounts.grow_filesystem(mounted.fstype, device, self._grow_at(vdir, request, path))
            return pb.NodeExpandVolumeResponse(capacity_bytes=_capacity(volume_id, device, request))

    def _grow_at(self, vdir: VolumeDir, request, path: str) -> str:
        """Where to run xfs_growfs: the staging path when given (a published path may be a read-only bind)."""
        staging = request.staging_target_path
        staged = mount_at(staging) if staging else None
        return staging if staged is not None and self._belongs(vdir, staged, staging) else path

    def _mounted_volume(self, vdir: VolumeDir, volume_id: str, path: str) -> Mount:
        if not os.path.exists(path):
            raise not_found(f"{path} does not exist")
        mounted = mount_at(path)
        if mounted is None or not self._belongs(vdir, mounted, path):
            raise not_found(f"volume {volume_id} is not staged or published at {path}")
        return mounted

    # --- which mounts and devices are the volume's ----------------------------------------------------------

    def _belongs(self, vdir: VolumeDir, mounted: Mount, path: str) -> bool:
        """Whether the mount at `path` is this volume: its ceph-fuse (by fsname), a file system on one of its
        devices, or one of its devices bound there (block)."""
        if mounted.source == vdir.tag:
            return True
        numbers = {device_number(device) for device in self.mounter.devices(vdir)}
        if mounted.device in numbers:
            return True
        return mounted.fstype == "devtmpfs" and device_number(path) in numbers

    @staticmethod
    def _primary(devices: list[str]) -> str | None:
        """The device NodeStageVolume attached: the writable one; the only one when staged read-only."""
        writable = [device for device in devices if not mounts.device_readonly(device)]
        return (writable or devices or [None])[0]


def _capacity(volume_id: str, device: str, request) -> int:
    size = mounts.device_size(device)
    if size < request.capacity_range.required_bytes:  # the image was not grown (yet): say so, grow what there is
        log.warning("NodeExpandVolume %s: the device has %d bytes, %d were asked for", volume_id, size,
                    request.capacity_range.required_bytes)
    return size


def _usage(statistics: os.statvfs_result) -> list[pb.VolumeUsage]:
    size = statistics.f_frsize
    usage = [pb.VolumeUsage(total=statistics.f_blocks * size, available=statistics.f_bavail * size,
                            used=(statistics.f_blocks - statistics.f_bfree) * size, unit=pb.VolumeUsage.BYTES)]
    if statistics.f_files > 0 and statistics.f_ffree >= 0:  # ceph-fuse counts no free inodes (-1)
        usage.append(pb.VolumeUsage(total=statistics.f_files, available=statistics.f_favail,
                                    used=statistics.f_files - statistics.f_ffree, unit=pb.VolumeUsage.INODES))
    return usage
