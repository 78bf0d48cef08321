"""RBD mounters: an image as a block device on this host. `rbd-fuse` + a loop device needs no kernel module (the
tests' machine has neither rbd nor nbd); `krbd` is the kernel's RBD client; `rbd-nbd` serves the image over nbd.

Which devices belong to a volume is read from the host each time (loop devices' backing files, the mapping tools'
lists), never remembered."""
from __future__ import annotations

import json
import os

from robin.mounts import recovery, system
from robin.mounts.errors import NOT_FOUND, MountError
from robin.mounts.system import Daemons, ToolError, canonical, mount_at
from robin.mounts.volume import VolumeDir

MOUNT_TIMEOUT_S = 60  # a FUSE daemon connecting to the cluster and showing the volume


class RbdFuse:
    """rbd-fuse shows the image as a file under the volume directory; a loop device makes that file a block
    device. For nodes without the rbd and nbd kernel modules (the tests' machine).

    rbd-fuse runs with attr_timeout=0: the kernel then asks it for the file's size every time instead of
    keeping it for a second, rbd-fuse answers with librbd's current size, and `losetup --set-capacity` makes
    the loop device take a grown image's new size at once."""

    def __init__(self, daemons: Daemons):
        self.daemons = daemons

    def attach(self, vdir: VolumeDir, pool: str, image: str, user: str, readonly: bool) -> str:
        return system.attach_loop(self._image_file(vdir, pool, image, user), readonly)

    def devices(self, vdir: VolumeDir) -> list[str]:
        prefix = canonical(vdir.fuse) + "/"
        return sorted(device for device, backing in system.loop_devices().items() if backing.startswith(prefix))

    def detach(self, vdir: VolumeDir, device: str) -> None:
        system.detach_loop(device)

    def release(self, vdir: VolumeDir) -> None:
        """Once no loop device holds the file: unmount rbd-fuse, which closes the image (flushing librbd's cache,
        dropping its lock) and exits."""
        system.unmount(vdir.fuse)

    def refresh(self, vdir: VolumeDir, device: str) -> None:
        system.refresh_loop(device)

    def daemon_gone(self, vdir: VolumeDir) -> bool:
        """The volume's rbd-fuse died under its loop device: the image file reads ENOTCONN."""
        return mount_at(vdir.fuse) is not None and recovery.daemon_gone(vdir.fuse)

    def _image_file(self, vdir: VolumeDir, pool: str, image: str, user: str) -> str:
        path = os.path.join(vdir.fuse, image)
        if mount_at(vdir.fuse) is not None:
            try:
                os.stat(path)
                return path  # a running rbd-fuse, perhaps started by this plugin's predecessor
            except FileNotFoundError as exc:
                raise MountError(NOT_FOUND, f"RBD image {pool}/{image} does not exist") from exc
            except OSError:
                system.unmount(vdir.fuse)  # its daemon died ("transport endpoint is not connected"): start anew
        return self._start(vdir, pool, image, user, path)

    def _start(self, vdir: VolumeDir, pool: str, image: str, user: str, path: str) -> str:
        os.makedirs(vdir.fuse, exist_ok=True)
        pid = self.daemons.start(["rbd-fuse", "-f", "-c", vdir.conf, "--id", user, "-p", pool, "-r", image,
                                  "-o", "attr_timeout=0", vdir.fuse], vdir.log("rbd-fuse"))
        system.wait_for(lambda: mount_at(vdir.fuse) is not None or not self.daemons.alive(pid), MOUNT_TIMEOUT_S)
        if mount_at(vdir.fuse) is None or not self.daemons.alive(pid):
            status = self.daemons.exit_status(pid)
            self._stop(vdir, pid)
            raise ToolError(f"rbd-fuse did not mount (exit status {status}): {system.log_tail(vdir.log('rbd-fuse'))}")
        try:
            os.stat(path)  # the lookup connects rbd-fuse to the cluster and opens the image
            return path
        except FileNotFoundError as exc:
            self._stop(vdir, pid)
            raise MountError(NOT_FOUND, f"RBD image {pool}/{image} does not exist") from exc
        except OSError as exc:
            self._stop(vdir, pid)
            raise ToolError(f"rbd-fuse did not show {pool}/{image} ({exc.strerror}): "
                            f"{system.log_tail(vdir.log('rbd-fuse'))}") from exc

    def _stop(self, vdir: VolumeDir, pid: int) -> None:
        system.unmount(vdir.fuse)
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
        return system.run(*argv, *(["--read-only"] if readonly else [])).stdout.strip()

    def devices(self, vdir: VolumeDir) -> list[str]:
        image = vdir.image()
        if image is None:
            return []
        listed = json.loads(system.run(*self.list_command, "--format", "json").stdout or "[]")
        return sorted(entry["device"] for entry in listed
                      if (entry.get("pool"), entry.get(self.image_key)) == image and entry.get("snap") in ("-", ""))

    def detach(self, vdir: VolumeDir, device: str) -> None:
        system.run(*self.tool, "unmap", device, "-c", vdir.conf)

    def release(self, vdir: VolumeDir) -> None:
        """Nothing: unmapping the last device was all."""

    def refresh(self, vdir: VolumeDir, device: str) -> None:
        """Nothing: krbd and rbd-nbd follow the image's size by themselves."""

    def daemon_gone(self, vdir: VolumeDir) -> bool:
        """krbd has no daemon; rbd-nbd's death is not detected here (ceph-csi reattaches its nbd device)."""
        return False


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
