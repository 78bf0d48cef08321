"""Stage (map or mount) a volume once per host, publish it (bind mounts) at each path it is used from.

RBD images become block devices through the configured mounter (`rbd-fuse` + a loop device, `krbd`, `rbd-nbd`);
a blank image gets a file system (ext4 unless the capability names xfs), an image with anything on it never does.
CephFS volumes are mounted exactly at the volume's path of its file system, by the kernel's CephFS client where this
host's kernel has one, else (or when the volume asks for it) by ceph-fuse (robin.mounts.cephfs).

Nothing is remembered between calls: whether a volume is staged or published, and on which device, is read from
the mount table and the loop devices' backing files each time, so a process restarted between two calls carries on
where the last one stopped, and the FUSE daemons (in their own sessions) keep the mounts working meanwhile.

A stage whose FUSE daemon died (with the node plugin's container) is mounted again from its record
(robin.mounts.recovery) and bound again at its publish targets: at start (`recover_all`), and when a stage,
publish or volume-stats call finds it dead. An image's file system is then only checked and mounted, never made.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

from robin.mounts import cephfs, recovery, system
from robin.mounts.errors import NOT_FOUND, OCCUPIED, REFUSED, MountError
from robin.mounts.inflight import InFlight
from robin.mounts.mappers import MOUNT_TIMEOUT_S, MOUNTERS
from robin.mounts.recovery import StageRecord
from robin.mounts.system import Daemons, Mount, ToolError, canonical, device_number, mount_at
from robin.mounts.volume import Capability, Volume, VolumeDir

log = logging.getLogger(__name__)


def _refused(message: str) -> MountError:
    return MountError(REFUSED, message)


def _occupied(message: str) -> MountError:
    return MountError(OCCUPIED, message)


@dataclass(frozen=True)
class Usage:
    """One figure of a staged or published volume: bytes, or inodes."""

    total: int
    available: int = 0
    used: int = 0
    inodes: bool = False


@contextmanager
def _os_errors(call: str, volume_id: str):
    """A path that cannot be made, read or removed is the machine's failure, said with what failed."""
    try:
        yield
    except OSError as exc:
        raise ToolError(f"{call} {volume_id}: {exc}") from exc


class Stager:
    """Volumes staged under `state_dir` (their ceph.conf, keyring, daemon logs), RBD images mapped by `mounter`.
    `refresh`: what a recorded volume is mounted again with when its FUSE daemon died (the monitors and user a
    stage would get now); the record as it is when None."""

    def __init__(self, state_dir: str, mounter: str, refresh: Callable[[Volume], Volume] | None = None):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.state_dir = canonical(state_dir)  # as loop devices and the mount table spell it
        self.daemons = Daemons()
        self.mounter = MOUNTERS[mounter](self.daemons)
        self.refresh = refresh
        self._in_flight = InFlight()
        self._recoveries = itertools.count(1)

    def _dir(self, volume_id: str) -> VolumeDir:
        return VolumeDir(self.state_dir, volume_id)

    # --- stage --------------------------------------------------------------------------------------------

    def stage(self, volume: Volume, staging: str, capability: Capability) -> None:
        """Map or mount the volume at `staging` (a block volume: only map it); nothing new when it is there."""
        vdir = self._dir(volume.id)
        with self._in_flight.hold(volume.id), _os_errors("NodeStageVolume", volume.id):
            record = StageRecord(staging, volume, capability)
            self._recover_if_broken(vdir, record)  # with the request's volume: its credentials are current
            if volume.kind == "cephfs":
                self._stage_cephfs(volume, vdir, staging, capability)
            else:
                self._stage_rbd(volume, vdir, staging, capability)
            vdir.record_stage(record.to_json())

    def _stage_rbd(self, volume: Volume, vdir: VolumeDir, staging: str, capability: Capability) -> None:
        if not capability.block and capability.multi_writer:
            raise _refused("an RBD file system cannot be written from several nodes: use block mode")
        if self._rbd_staged(vdir, staging, capability):
            return
        primary = self._primary(self.mounter.devices(vdir))
        if capability.block and primary:
            return  # a block volume's stage is its device
        if primary and system.device_users(primary):
            raise _occupied(f"{volume.id} is already in use at {', '.join(system.device_users(primary))}")
        try:
            vdir.prepare(volume)
            device = primary or self.mounter.attach(vdir, volume.pool, volume.image, volume.user,
                                                    capability.readonly)
            if not capability.block:
                fs_type = self._file_system(device, capability.fs_type, volume)
                os.makedirs(staging, exist_ok=True)
                system.mount(device, staging, fs_type,
                             [*self._mount_options(capability), *system.FS_MOUNT_OPTIONS.get(fs_type, ())])
        except (MountError, OSError):
            self._undo(vdir)  # leave nothing half made: the caller may never unstage
            raise

    def _rbd_staged(self, vdir: VolumeDir, staging: str, capability: Capability) -> bool:
        """True if the volume is mounted at `staging` as asked; OCCUPIED if something else is."""
        staged = mount_at(staging)
        if staged is None:
            return False
        requested = capability.fs_type
        if (capability.block or not self._belongs(vdir, staged, staging)
                or (requested and requested != staged.fstype)):
            raise _occupied(f"{staging} already holds {staged.source} ({staged.fstype})")
        return True

    def _undo(self, vdir: VolumeDir) -> None:
        try:
            self._release(vdir)
        except (MountError, OSError) as exc:  # the failure that brought us here is the one to report
            log.warning("could not undo a failed stage in %s: %s", vdir.path, exc)

    @staticmethod
    def _file_system(device: str, requested: str, volume: Volume) -> str:
        """The file system on the device; a new one only on a blank image."""
        if requested and requested not in system.FILESYSTEMS:
            raise _refused(f"fs_type {requested!r} is not supported: {', '.join(system.FILESYSTEMS)}")
        found = system.probe(device)
        if "TYPE" in found:
            if requested and found["TYPE"] != requested:
                raise _refused(f"{volume.pool}/{volume.image} holds a {found['TYPE']} file system, not {requested}")
            return found["TYPE"]
        if found:
            raise _refused(f"{volume.pool}/{volume.image} holds no file system but "
                           f"{', '.join(f'{k}={v}' for k, v in found.items())}: not formatting it")
        if not system.starts_with_zeros(device):
            raise _refused(f"{volume.pool}/{volume.image} holds data but no file system blkid knows: "
                           f"not formatting it")
        fs_type = requested or "ext4"
        log.info("making an %s file system on the blank image %s/%s (%s)", fs_type, volume.pool, volume.image,
                 device)
        system.make_filesystem(device, fs_type)
        return fs_type

    @staticmethod
    def _mount_options(capability: Capability) -> list[str]:
        # Last, so that they win over the capability's flags: a device node or set-id program a pod wrote into
        # its volume never acts on this host, nor in another pod. Bind mounts of the stage inherit them.
        options = [*capability.flags, *system.TENANT_DATA_OPTIONS]
        if capability.readonly:
            options.append("ro")
        return options

    def _stage_cephfs(self, volume: Volume, vdir: VolumeDir, staging: str, capability: Capability) -> None:
        if capability.block:
            raise _refused("a CephFS volume cannot be used as a block device")
        staged = mount_at(staging)
        if staged is not None:
            if not self._is_cephfs_stage(vdir, staged):
                raise _occupied(f"{staging} already holds {staged.source} ({staged.fstype})")
            return
        mounter = cephfs.choose(volume, cephfs.kernel_has_ceph())
        vdir.prepare(volume)
        os.makedirs(staging, exist_ok=True)
        if mounter == cephfs.KERNEL:
            self._mount_cephfs_kernel(volume, vdir, staging, capability)
        else:
            self._mount_cephfs_fuse(volume, vdir, staging, capability)

    def _mount_cephfs_kernel(self, volume: Volume, vdir: VolumeDir, staging: str, capability: Capability) -> None:
        source = cephfs.kernel_source(volume)
        options = [*cephfs.kernel_options(volume, vdir, os.uname().release), *self._mount_options(capability)]
        vdir.record_kernel_mount(source)
        try:
            system.mount(source, staging, "ceph", options)
        except ToolError as exc:
            vdir.remove()
            if "No such file or directory" in exc.message:
                raise MountError(NOT_FOUND, f"CephFS {volume.fs_name}:{volume.path} does not exist: "
                                            f"{exc.message}") from exc
            raise

    def _mount_cephfs_fuse(self, volume: Volume, vdir: VolumeDir, staging: str, capability: Capability,
                           keep_dir: bool = False) -> None:
        options = ",".join([*cephfs.fuse_options(volume, vdir), *self._mount_options(capability)])
        pid = self.daemons.start(["ceph-fuse", "-f", "-c", vdir.conf, "--id", volume.user, "--client_fs",
                                  volume.fs_name, "-r", volume.path, "-o", options, staging], vdir.log("ceph-fuse"))

        def mounted() -> bool:
            current = mount_at(staging)
            return current is not None and current.source == vdir.tag

        system.wait_for(lambda: mounted() or not self.daemons.alive(pid), MOUNT_TIMEOUT_S)
        if mounted() and self.daemons.alive(pid):
            return
        self._cephfs_failed(volume, vdir, staging, pid, keep_dir)

    def _cephfs_failed(self, volume: Volume, vdir: VolumeDir, staging: str, pid: int, keep_dir: bool) -> None:
        said = system.log_tail(vdir.log("ceph-fuse"))
        status = self.daemons.exit_status(pid)
        if mount_at(staging) is not None and mount_at(staging).source == vdir.tag:
            system.unmount(staging)
        self.daemons.stop(pid)
        if not keep_dir:  # a recovery keeps the record, to try again
            vdir.remove()
        if "No such file or directory" in said:
            raise MountError(NOT_FOUND, f"CephFS {volume.fs_name}:{volume.path} does not exist: {said}")
        raise ToolError(f"ceph-fuse did not mount {volume.fs_name}:{volume.path} (exit status {status}): {said}")

    @staticmethod
    def _is_cephfs_stage(vdir: VolumeDir, mounted: Mount) -> bool:
        """The volume's ceph-fuse (by its fsname) or its kernel mount (by the device string it was mounted with)."""
        if mounted.source == vdir.tag:
            return True
        return mounted.fstype == "ceph" and mounted.source == vdir.kernel_mount()

    # --- unstage ------------------------------------------------------------------------------------------

    def unstage(self, volume_id: str, staging: str) -> None:
        """Unmount the volume's stage and stop what served it: whatever of it is there (idempotent)."""
        vdir = self._dir(volume_id)
        with self._in_flight.hold(volume_id), _os_errors("NodeUnstageVolume", volume_id):
            daemons = self.daemons.using(vdir.conf)  # looked up first: once unmounted they are on their way out
            staged = mount_at(staging)
            if staged is not None and self._belongs(vdir, staged, staging):
                others = [m.mountpoint for m in system.mount_table()
                          if m.device == staged.device and m.mountpoint != staged.mountpoint]
                if others:
                    raise _refused(f"{volume_id} is still published at {', '.join(others)}")
                system.unmount(staging)
            self._release(vdir, daemons)

    def _release(self, vdir: VolumeDir, daemons: list[int] | None = None) -> None:
        """Detach the volume's devices, stop its daemons, remove its directory: whatever of it is there."""
        if daemons is None:
            daemons = self.daemons.using(vdir.conf)
        for device in self.mounter.devices(vdir):
            users = system.device_users(device)
            if users:
                raise _refused(f"{device} is still in use at {', '.join(users)}")
            self.mounter.detach(vdir, device)
        self.mounter.release(vdir)
        self.daemons.wait_gone(daemons)
        vdir.remove()

    # --- publish, unpublish -------------------------------------------------------------------------------

    def publish(self, volume_id: str, staging: str, target: str, block: bool, readonly: bool) -> None:
        """Bind the staged volume (its file system, or its device) at `target`; nothing new when it is there."""
        vdir = self._dir(volume_id)
        with self._in_flight.hold(volume_id), _os_errors("NodePublishVolume", volume_id):
            self._recover_if_broken(vdir)
            published = mount_at(target)
            if published is not None:
                if self._belongs(vdir, published, target) and published.readonly == readonly:
                    return
                raise _occupied(f"{target} already holds {published.source} "
                                f"({'read-only' if published.readonly else 'read-write'})")
            self._check_staged(vdir, volume_id, staging, block)
            source, own_device = self._block_source(vdir, readonly) if block else (canonical(staging), False)
            try:
                self._make_target(target, block)
                system.bind(source, target, readonly, device=block)
            except (MountError, OSError):
                self._remove_target(target)
                if own_device:
                    self.mounter.detach(vdir, source)
                raise

    def _check_staged(self, vdir: VolumeDir, volume_id: str, staging: str, block: bool) -> None:
        staged = mount_at(staging)
        mounted = staged is not None and self._belongs(vdir, staged, staging)
        if block and mounted:
            raise _refused(f"{volume_id} is staged as a file system at {staging}, not as a block device")
        if not block and not mounted:
            raise _refused(f"{volume_id} is not staged at {staging}: call NodeStageVolume first")

    def _block_source(self, vdir: VolumeDir, readonly: bool) -> tuple[str, bool]:
        """The device to bind, and whether it was attached for this target alone."""
        primary = self._primary(self.mounter.devices(vdir))
        image = vdir.image()
        if primary is None or image is None:
            raise _refused(f"no device is attached for {vdir.path}: call NodeStageVolume first")
        if not readonly or system.device_readonly(primary):
            return primary, False
        # A read-only bind mount of a device node still lets writes through: this target gets a device of its
        # own, attached read-only, which unpublish detaches again.
        return self.mounter.attach(vdir, *image, vdir.user(), readonly=True), True

    @staticmethod
    def _make_target(target: str, block: bool) -> None:
        if block:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()  # a device node is bound onto a file
        else:
            os.makedirs(target, exist_ok=True)

    def unpublish(self, volume_id: str, target: str) -> None:
        """Unbind `target` and remove it (idempotent)."""
        vdir = self._dir(volume_id)
        with self._in_flight.hold(volume_id), _os_errors("NodeUnpublishVolume", volume_id):
            own_device = self._own_readonly_device(vdir, target)
            system.unmount(target)
            if own_device and not system.device_users(own_device):
                self.mounter.detach(vdir, own_device)
            self._remove_target(target)

    def _own_readonly_device(self, vdir: VolumeDir, target: str) -> str | None:
        """The read-only device publish attached for this block target alone, if it did."""
        published = mount_at(target)
        if published is None or published.fstype != "devtmpfs":
            return None
        devices = self.mounter.devices(vdir)
        primary, number = self._primary(devices), device_number(target)
        return next((d for d in devices if d != primary and device_number(d) == number
                     and system.device_readonly(d)), None)

    @staticmethod
    def _remove_target(target: str) -> None:
        """Remove what publish made: an empty directory or a file, never anything with content."""
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                os.rmdir(target)
            else:
                os.unlink(target)
        except FileNotFoundError:
            pass

    # --- usage, expand ------------------------------------------------------------------------------------

    def usage(self, volume_id: str, path: str) -> list[Usage]:
        """The volume's size (a block volume), or its file system's bytes and inodes, where it is staged or
        published."""
        with _os_errors("NodeGetVolumeStats", volume_id):
            self._mounted_volume(self._dir(volume_id), volume_id, path)
            if device_number(path):
                return [Usage(total=system.device_size(path))]
            return _usage(os.statvfs(path))

    def expand(self, volume_id: str, path: str, staging: str, required_bytes: int) -> int:
        """Make the volume staged or published at `path` take its image's new size; its capacity in bytes."""
        vdir = self._dir(volume_id)
        with self._in_flight.hold(volume_id), _os_errors("NodeExpandVolume", volume_id):
            mounted = self._mounted_volume(vdir, volume_id, path)
            if self._is_cephfs_stage(vdir, mounted):  # CephFS: the quota is the size, nothing to grow on a host
                statistics = os.statvfs(path)
                return statistics.f_blocks * statistics.f_frsize
            for device in self.mounter.devices(vdir):
                self.mounter.refresh(vdir, device)
            if mounted.fstype == "devtmpfs":  # a block volume: the device is all there is
                return _capacity(volume_id, path, required_bytes)
            device = system.device_path(mounted.device)
            system.grow_filesystem(mounted.fstype, device, self._grow_at(vdir, staging, path))
            return _capacity(volume_id, device, required_bytes)

    def _grow_at(self, vdir: VolumeDir, staging: str, path: str) -> str:
        """Where to run xfs_growfs: the staging path when given (a published path may be a read-only bind)."""
        staged = mount_at(staging) if staging else None
        return staging if staged is not None and self._belongs(vdir, staged, staging) else path

    def _mounted_volume(self, vdir: VolumeDir, volume_id: str, path: str) -> Mount:
        if not os.path.exists(path):
            raise MountError(NOT_FOUND, f"{path} does not exist")
        mounted = mount_at(path)
        if mounted is None or not self._belongs(vdir, mounted, path):
            raise MountError(NOT_FOUND, f"volume {volume_id} is not staged or published at {path}")
        return mounted

    # --- stages whose FUSE daemon died ----------------------------------------------------------------------

    def recover_all(self) -> None:
        """Mount again every stage under state_dir whose FUSE daemon is gone, and bind its publish targets again
        (the node plugin's start: its container's end took the daemons with it). Each failure is logged."""
        for entry in sorted(os.scandir(self.state_dir), key=lambda e: e.name):
            volume_id = recovery.recorded_volume_id(entry.path)
            if volume_id is None:
                if entry.is_dir() and self._broken_unrecorded(entry.name):
                    log.error("the FUSE daemon of %s is gone and it has no stage record (staged by an older "
                              "plugin): it cannot be mounted again; recreate the pods that use it", entry.path)
                continue
            vdir = self._dir(volume_id)
            if not self._broken(vdir):
                continue  # not held for nothing: a call on the volume meanwhile would be refused
            try:
                with self._in_flight.hold(volume_id), _os_errors("recovery", volume_id):
                    self._recover_if_broken(vdir)
            except MountError as exc:
                log.error("could not recover %s: %s", volume_id, exc.message)

    def condition(self, volume_id: str, path: str) -> str | None:
        """None when the volume works (mounted again first if its FUSE daemon died); else what is wrong with it,
        for NodeGetVolumeStats' volume condition."""
        vdir = self._dir(volume_id)
        if not self._broken(vdir):
            return None
        try:
            with self._in_flight.hold(volume_id), _os_errors("NodeGetVolumeStats", volume_id):
                self._recover_if_broken(vdir)
        except MountError as exc:
            return f"{path}: {exc.message}"
        return None

    def _broken(self, vdir: VolumeDir) -> bool:
        """A FUSE daemon of the volume is gone: its ceph-fuse under a mount of its stage, or its rbd-fuse under
        the loop device of its stage."""
        if self.mounter.daemon_gone(vdir):
            return True
        return any(m.source == vdir.tag and m.fstype.startswith("fuse") and recovery.daemon_gone(m.mountpoint)
                   for m in system.mount_table())

    def _broken_unrecorded(self, name: str) -> bool:
        fuse = os.path.join(self.state_dir, name, "fuse")
        return any((m.source == f"robin-csi:{name}" or m.mountpoint == fuse) and m.fstype.startswith("fuse")
                   and recovery.daemon_gone(m.mountpoint) for m in system.mount_table())

    def _recover_if_broken(self, vdir: VolumeDir, record: StageRecord | None = None) -> None:
        """Mount the stage again if a FUSE daemon of it is gone, from `record` (a stage request's) or the one
        the volume's directory keeps, and bind its publish targets again."""
        if not self._broken(vdir):
            return
        if record is None:
            record = StageRecord.read(vdir)
            if record is None:
                raise _refused(f"the FUSE daemon of {vdir.path} is gone and it has no stage record (staged by an "
                               f"older plugin): recreate the pods that use it")
            if self.refresh is not None:
                record = replace(record, volume=self.refresh(record.volume))
        volume = record.volume
        log.warning("%s: its FUSE daemon is gone (ENOTCONN at its mounts): mounting %s again", volume.id,
                    record.staging)
        if record.capability.block:
            raise _refused(f"{volume.id} is a block volume whose rbd-fuse is gone: its loop device cannot be "
                           f"replaced under the pods that hold it; recreate them")
        targets = self._revive_cephfs(vdir, record) if volume.kind == "cephfs" else self._revive_rbd(vdir, record)
        log.warning("recovered %s: %s mounted again, bound again at %s (recovery %d of this process)", volume.id,
                    record.staging, ", ".join(targets) or "no publish target", next(self._recoveries))

    def _revive_cephfs(self, vdir: VolumeDir, record: StageRecord) -> list[str]:
        """ceph-fuse anew at the staging path; each dead bind of the volume bound from it again."""
        staging, volume = canonical(record.staging), record.volume
        dead = [m for m in system.mount_table() if m.source == vdir.tag and recovery.daemon_gone(m.mountpoint)]
        staged = mount_at(staging)
        if staged is not None and not self._is_cephfs_stage(vdir, staged):
            raise _occupied(f"{staging} holds {staged.source} ({staged.fstype}), not {volume.id}")
        if staged is None or recovery.daemon_gone(staging):
            system.unmount_dead(staging)
            self.daemons.wait_gone(self.daemons.using(vdir.conf))
            vdir.prepare(volume)
            os.makedirs(staging, exist_ok=True)
            self._mount_cephfs_fuse(volume, vdir, staging, record.capability, keep_dir=True)
        targets = [m for m in dead if m.mountpoint != staging]
        for target in targets:
            system.unmount_dead(target.mountpoint)
            system.bind(staging, target.mountpoint, target.readonly)
        return [target.mountpoint for target in targets]

    def _revive_rbd(self, vdir: VolumeDir, record: StageRecord) -> list[str]:
        """Unmount the file system whose device died, everywhere on this host; a new rbd-fuse and loop device;
        the file system found there (never made), checked, mounted, and bound again at the targets."""
        staging, volume, capability = canonical(record.staging), record.volume, record.capability
        old = self.mounter.devices(vdir)
        numbers = {device_number(device) for device in old}
        mounts = [m for m in system.mount_table() if m.device in numbers]
        targets = [m for m in mounts if m.mountpoint != staging]
        for mounted in [*targets, *(m for m in mounts if m.mountpoint == staging)]:
            system.unmount(mounted.mountpoint)  # never lazily: the old file system must be gone before another
        for device in old:
            try:
                self.mounter.detach(vdir, device)
            except ToolError as exc:
                raise _refused(f"{device} (of {volume.id}) is still held, by the pods that had the volume: it can "
                               f"be staged again once they are recreated ({exc.message})") from exc
        self.mounter.release(vdir)
        self.daemons.wait_gone(self.daemons.using(vdir.conf))
        vdir.prepare(volume)
        device = self.mounter.attach(vdir, volume.pool, volume.image, volume.user, capability.readonly)
        try:
            fs_type = self._recorded_file_system(device, volume)
            if not capability.readonly:
                system.check_filesystem(fs_type, device)
            os.makedirs(staging, exist_ok=True)
            system.mount(device, staging, fs_type,
                         [*self._mount_options(capability), *system.FS_MOUNT_OPTIONS.get(fs_type, ())])
        except (MountError, OSError):
            self.mounter.detach(vdir, device)  # the directory and its record stay, for another try
            self.mounter.release(vdir)
            raise
        for target in targets:
            system.bind(staging, target.mountpoint, target.readonly)
        return [target.mountpoint for target in targets]

    @staticmethod
    def _recorded_file_system(device: str, volume: Volume) -> str:
        """The file system the image holds; a recovery mounts it or nothing (an image that shows none now is
        not blank: its stage had one)."""
        found = system.probe(device)
        if "TYPE" not in found:
            raise _refused(f"{volume.pool}/{volume.image} shows no file system after its rbd-fuse died: not "
                           f"formatting it, not mounting it")
        return found["TYPE"]

    # --- which mounts and devices are the volume's ----------------------------------------------------------

    def device(self, volume_id: str) -> str:
        """The device the volume's stage attached (staged as a block volume)."""
        return self._primary(self.mounter.devices(self._dir(volume_id)))

    def _belongs(self, vdir: VolumeDir, mounted: Mount, path: str) -> bool:
        """Whether the mount at `path` is this volume: its ceph-fuse (by fsname), a file system on one of its
        devices, or one of its devices bound there (block)."""
        if self._is_cephfs_stage(vdir, mounted):
            return True
        numbers = {device_number(device) for device in self.mounter.devices(vdir)}
        if mounted.device in numbers:
            return True
        return mounted.fstype == "devtmpfs" and device_number(path) in numbers

    @staticmethod
    def _primary(devices: list[str]) -> str | None:
        """The device the stage attached: the writable one; the only one when staged read-only."""
        writable = [device for device in devices if not system.device_readonly(device)]
        return (writable or devices or [None])[0]


def _capacity(volume_id: str, device: str, required_bytes: int) -> int:
    size = system.device_size(device)
    if size < required_bytes:  # the image was not grown (yet): say so, grow what there is
        log.warning("expanding %s: the device has %d bytes, %d were asked for", volume_id, size, required_bytes)
    return size


def _usage(statistics: os.statvfs_result) -> list[Usage]:
    size = statistics.f_frsize
    usage = [Usage(total=statistics.f_blocks * size, available=statistics.f_bavail * size,
                   used=(statistics.f_blocks - statistics.f_bfree) * size)]
    if statistics.f_files > 0 and statistics.f_ffree >= 0:  # ceph-fuse counts no free inodes (-1)
        usage.append(Usage(total=statistics.f_files, available=statistics.f_favail,
                           used=statistics.f_files - statistics.f_ffree, inodes=True))
    return usage
