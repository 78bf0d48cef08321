"""The node agent in `robin gateway`: carry out on this host what the gateway accounts ask for, and report.

Every ROBIN_GATEWAY_RECONCILE_INTERVAL seconds the agent compares the accounts (what the API recorded) with what
the kernel has mounted in ROBIN_GATEWAY_DIR/volumes, never with anything it remembers, so that a restarted (or
killed) agent carries on where its predecessor stopped without losing or doubling a mount:

- pending: mount the volume (an RBD image only while no node has it mapped), report `mounted` and where, or
  `failed` with robin's error code;
- mounted here, but not in the kernel's table (the host rebooted, a FUSE daemon died): mount it again;
- unmounting: unmount, then remove the account; a failure is reported and tried again at the next round;
- a mount in the directory that no account claims (an activation withdrawn while it was being mounted, a crash
  between an unmount and the row's removal): unmount it;
- a check asked for (verify_state `verifying`, not stale) that no thread of this agent runs: start it.

Only the holder of the agent lock (robin.leadership) acts; a second agent waits, and says so in its log.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from robin.ceph import CephError
from robin.config import Settings
from robin.errors import RobinError, api_error
from robin.gateway import checks, mounting, service
from robin.gateway.activation import STALE_VERIFY
from robin.gateway.models import GatewayAccount, MountState, VerifyState
from robin.leadership import Leadership
from robin.volumes.models import CephfsPath, RbdImage

log = logging.getLogger(__name__)
# A key and a file of the agent's own: it and robin serve's maintenance never wait for each other.
AGENT_LOCK_KEY = 0x726F62696E67  # "robing": robin's gateway
AGENT_LOCK_NAME = "gateway"  # on SQLite: <database>.gateway.lock


class Agent:
    def __init__(self, app: Flask, settings: Settings):
        self._app = app
        self._place = mounting.Place(settings.gateway_dir, settings.gateway_mounter)
        self._interval = settings.gateway_reconcile_interval
        self._lock = Leadership(settings.database_url, AGENT_LOCK_NAME, AGENT_LOCK_KEY)
        self._leading: bool | None = None  # None: not said yet
        self._checks: dict[int, threading.Thread] = {}

    def run(self, stop: threading.Event) -> None:
        """Reconcile every interval until `stop` is set, while holding the lock; release it at the end."""
        try:
            while not stop.is_set():
                try:
                    if self._lead():
                        with self._app.app_context():
                            self.reconcile()
                except (RobinError, CephError, OSError, SQLAlchemyError) as exc:
                    log.warning("gateway agent round failed", extra={"error": str(exc)})
                stop.wait(self._interval)
        finally:
            self._lock.release()

    def _lead(self) -> bool:
        leading = self._lock.acquire()
        if leading != self._leading:
            if leading:
                log.info("gateway agent lock taken: this gateway mounts and unmounts the activated volumes",
                         extra={"gateway_dir": self._place.gateway_dir})
            else:
                log.warning("gateway agent waiting for its lock: another gateway agent on this database acts; "
                            "this one serves SFTP only until that one stops")
            self._leading = leading
        return leading

    def reconcile(self) -> None:
        """One round: every account, then every mount no account claims."""
        mounted = mounting.mounted_volumes(self._place)
        claimed = set()
        for account, volume in service.wanted():
            claimed.add(mounting.volume_id(volume))
            if account.mount_state is MountState.UNMOUNTING:
                self._unmount(account, volume)
                continue
            self._mount_if_wanted(account, volume, mounting.volume_id(volume) in mounted)
            self._check_if_asked(account, volume)
        for orphan in sorted(set(mounted) - claimed):
            log.info("gateway unmounting a volume no account claims", extra={"volume_id": orphan})
            self._unmount_orphan(orphan)

    def _mount_if_wanted(self, account: GatewayAccount, volume: RbdImage | CephfsPath, in_kernel: bool) -> None:
        ours = mounting.mount_path(self._place, volume)
        if account.mount_state is MountState.MOUNTED:
            # An account on a mount this agent did not make (another directory) is not its to remake.
            if account.mount_path != ours or in_kernel:
                return
            log.warning("gateway mount lost: mounting again", extra={"volume": volume.name, "path": ours})
        elif account.mount_state is not MountState.PENDING:
            return
        try:
            if isinstance(volume, RbdImage) and not in_kernel:
                mounting.refuse_in_use(volume)
            path = mounting.mount(self._place, volume)
        except (RobinError, CephError) as exc:
            error = api_error(exc)
            log.warning("gateway mount failed", extra={"volume": volume.name, "code": error.code,
                                                       "error": error.message})
            service.report_failed(account.id, account.mount_state, error)
            return
        if service.report_mounted(account.id, path):
            log.info("gateway mounted", extra={"volume": volume.name, "user": account.username, "path": path})
        else:  # deactivated or withdrawn meanwhile: the next round unmounts it
            log.info("gateway mounted a volume no longer wanted", extra={"volume": volume.name, "path": path})

    def _unmount(self, account: GatewayAccount, volume: RbdImage | CephfsPath) -> None:
        try:
            mounting.unmount(self._place, mounting.volume_id(volume), volume.name)
        except RobinError as exc:
            if exc.code != account.mount_error_code:
                log.warning("gateway unmount failed", extra={"volume": volume.name, "error": exc.message})
            service.report_failed(account.id, MountState.UNMOUNTING, exc)
            return
        if service.forget(account.id):
            log.info("gateway unmounted", extra={"volume": volume.name, "user": account.username})

    def _unmount_orphan(self, volume_id: str) -> None:
        try:
            mounting.unmount(self._place, volume_id, volume_id)
        except RobinError as exc:
            log.warning("gateway unmount failed", extra={"volume_id": volume_id, "error": exc.message})

    def _check_if_asked(self, account: GatewayAccount, volume: RbdImage | CephfsPath) -> None:
        """Start the check the account asks for, unless a thread of this agent runs it already. A check asked for
        before a restart (its thread died with the previous agent) starts again, unless it is stale."""
        self._checks = {key: thread for key, thread in self._checks.items() if thread.is_alive()}
        if account.verify_state is not VerifyState.VERIFYING or account.id in self._checks \
                or service.is_stale(account, STALE_VERIFY):
            return
        thread = threading.Thread(target=self._check, args=(volume, account.id, account.mount_path),
                                  name=f"verify-{volume.name}", daemon=True)
        self._checks[account.id] = thread
        log.info("gateway check started", extra={"volume": volume.name, "user": account.username})
        thread.start()

    def _check(self, volume: RbdImage | CephfsPath, account_id: int, path: str | None) -> None:
        with self._app.app_context():
            checks.run(self._place, volume, account_id, path)


def start(app: Flask, settings: Settings, stop: threading.Event, crashed: Callable[[], None]) -> threading.Thread:
    """Run the agent in a thread of its own (mounts block for seconds; the SSH server's event loop must not).
    An error no round expects ends the agent and calls `crashed`: a gateway that serves SFTP while nothing
    mounts would leave every activation waiting in vain, so it stops, to be restarted."""
    agent = Agent(app, settings)

    def run() -> None:
        try:
            agent.run(stop)
        except Exception:
            log.exception("gateway agent failed: stopping the gateway")
            crashed()

    thread = threading.Thread(target=run, name="gateway-agent", daemon=True)
    thread.start()
    return thread
