"""`robin gateway`: the node agent (agent.py: mounts what the accounts ask for) and the SSH server, SFTP only,
password logins against the gateway accounts.

No shell, no exec, no scp, no port, agent or X11 forwarding: a session can only be SFTP, inside its
account's mount (sftp.py). The host key is made on first start and kept in `gateway_dir`, so the
fingerprint clients recorded in known_hosts stays valid across restarts.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import asyncssh
from sqlalchemy.exc import SQLAlchemyError

from robin.config import Settings
from robin.gateway import agent, service
from robin.gateway.mountinfo import is_mount_point
from robin.gateway.service import Login
from robin.gateway.sessions import Sessions
from robin.gateway.sftp import ConfinedSFTPServer
from robin.gateway.throttle import LoginThrottle, ThrottleRules

log = logging.getLogger(__name__)
HOST_KEY_NAME = "ssh_host_ed25519_key"
LOGIN_TIMEOUT_S = 30
LOGIN_THREADS = 2
# How long a stopping gateway waits for its agent's round to end (a mount under way finishes or times out).
AGENT_STOP_TIMEOUT_S = 30


class AgentFailed(RuntimeError):
    """The node agent ended on an error no round expects: the gateway stops, with a failing exit status."""


def load_host_key(directory: Path) -> asyncssh.SSHKey:
    """The key at <directory>/ssh_host_ed25519_key, made (0600) when there is none."""
    path = directory / HOST_KEY_NAME
    directory.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _write_new_key(path)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # a private key others can read is no secret: take it back
    return asyncssh.read_private_key(path)


def _write_new_key(path: Path) -> None:
    # Written whole under another name (mkstemp makes it 0600), then linked into place: a crash never
    # leaves half a key, and of two gateways starting at once the second keeps the first one's key.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".host-key-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
        log.info("gateway host key created", extra={"path": str(path)})
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)


def refusal(login: Login) -> str | None:
    """Why a login with the right password may still not go on, or None."""
    if login.login_forbidden:
        return "login is forbidden"
    if login.mount_path is None or not is_mount_point(login.mount_path):
        return "the volume is not mounted"
    return None


class _Connection(asyncssh.SSHServer):
    """One client connection: password authentication, then registered with the live sessions."""

    def __init__(self, sessions: Sessions, throttle: LoginThrottle, checks: Executor):
        self._sessions, self._throttle, self._checks = sessions, throttle, checks
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self._sessions.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # everyone must authenticate

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        address = self._conn.get_extra_info("peername")[0]
        login = await self._check(username, password, address)
        if login is None:
            return False
        reason = refusal(login)
        if reason is not None:
            log.warning(f"gateway login refused: {reason}",
                        extra={"user": username, "peer": address, "mount_path": login.mount_path})
            return False
        self._conn.set_extra_info(robin_login=login)
        self._sessions.add(self._conn, login)
        log.info("gateway login", extra={"user": username, "peer": address, "mount_path": login.mount_path})
        return True

    async def _check(self, username: str, password: str, address: str) -> Login | None:
        """The account if the password is right; None if not, or while throttling locks the account or address."""
        locked = self._throttle.locked(username, address)
        if locked is not None:
            log.warning("gateway login refused: too many failed logins", extra={
                "user": username, "peer": address, "locked": locked,
                "for_s": self._throttle.rules.window})
            return None
        await asyncio.sleep(self._throttle.delay(username, address))
        try:
            login = await asyncio.get_running_loop().run_in_executor(self._checks, service.check_login, username,
                                                                     password)
        except SQLAlchemyError as exc:
            log.warning("gateway cannot read the accounts", extra={"error": str(exc)})
            return None
        if login is None:
            account_failures, address_failures = self._throttle.failed(username, address)
            log.info("gateway login refused: wrong user or password", extra={
                "user": username, "peer": address, "account_failures": account_failures,
                "address_failures": address_failures})
            return None
        self._throttle.succeeded(username)
        return login


def throttle_rules(settings: Settings) -> ThrottleRules:
    return ThrottleRules(settings.gateway_login_delay, settings.gateway_login_max_delay,
                         settings.gateway_account_lockout, settings.gateway_address_lockout,
                         settings.gateway_lockout_seconds)


async def _sftp_session(io_threads: Executor, chan: asyncssh.SSHServerChannel) -> ConfinedSFTPServer:
    return await ConfinedSFTPServer.start(chan, chan.get_extra_info("robin_login").mount_path, io_threads)


async def start(settings: Settings, sessions: Sessions, key: asyncssh.SSHKey, checks: Executor,
                io_threads: Executor) -> asyncssh.SSHAcceptor:
    throttle = LoginThrottle(throttle_rules(settings))
    return await asyncssh.create_server(
        lambda: _Connection(sessions, throttle, checks), settings.gateway_host, settings.gateway_port,
        server_host_keys=[key], sftp_factory=partial(_sftp_session, io_threads), allow_scp=False,
        password_auth=True, kbdint_auth=False, public_key_auth=False, host_based_auth=False,
        gss_auth=False, gss_kex=False, agent_forwarding=False, x11_forwarding=False, allow_pty=False,
        login_timeout=LOGIN_TIMEOUT_S)


async def serve(settings: Settings, app) -> None:
    """Act as the node agent and serve SFTP until SIGTERM or SIGINT, then end every session and stop. Mounts
    stay: the next agent finds them, and only a deactivation unmounts."""
    sessions, stop = Sessions(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    key = load_host_key(Path(settings.gateway_dir))
    checks = ThreadPoolExecutor(LOGIN_THREADS, thread_name_prefix="login")
    io_threads = ThreadPoolExecutor(settings.gateway_io_threads, thread_name_prefix="sftp-io")
    acceptor = await start(settings, sessions, key, checks, io_threads)
    log.info("gateway listening", extra={"host": settings.gateway_host, "port": settings.gateway_port,
                                         "host_key": key.get_fingerprint()})
    watcher = asyncio.create_task(sessions.watch(stop))
    agent_stop = threading.Event()
    crashed = threading.Event()

    def agent_crashed() -> None:
        crashed.set()
        loop.call_soon_threadsafe(stop.set)

    reconciling = agent.start(app, settings, agent_stop, agent_crashed)
    await stop.wait()
    agent_stop.set()
    acceptor.close()
    sessions.end_all("the gateway is stopping")
    await acceptor.wait_closed()
    await watcher
    await loop.run_in_executor(None, reconciling.join, AGENT_STOP_TIMEOUT_S)
    for pool in (checks, io_threads):
        pool.shutdown(wait=False, cancel_futures=True)  # a thread stuck in a hung mount is not waited for
    log.info("gateway stopped")
    if crashed.is_set():
        raise AgentFailed("the gateway agent failed (its log says why); the gateway stopped")


def run(settings: Settings) -> None:
    from robin import create_app

    # asyncssh narrates every packet exchange at INFO; robin logs logins and ended sessions itself.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    app = create_app(settings)  # the agent's Ceph connections and settings, as the API's services use them
    asyncio.run(serve(settings, app))
