"""`robin gateway`: the SSH server, SFTP only, password logins against the gateway accounts.

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
from pathlib import Path

import asyncssh
from sqlalchemy.exc import SQLAlchemyError

from robin.config import Settings
from robin.gateway import service
from robin.gateway.mountinfo import is_mount_point
from robin.gateway.service import Login
from robin.gateway.sessions import Sessions
from robin.gateway.sftp import ConfinedSFTPServer

log = logging.getLogger(__name__)
HOST_KEY_NAME = "ssh_host_ed25519_key"
LOGIN_TIMEOUT_S = 30


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


def check_login(username: str, password: str) -> Login | None:
    """The login, if the account allows it and its volume is mounted. Blocking (scrypt, the database)."""
    try:
        login = service.check_login(username, password)
    except SQLAlchemyError as exc:
        log.warning("gateway cannot read the accounts", extra={"error": str(exc)})
        return None
    if login is not None and not is_mount_point(login.mount_path):
        log.warning("gateway login refused: the volume is not mounted",
                    extra={"user": username, "mount_path": login.mount_path})
        return None
    return login


class _Connection(asyncssh.SSHServer):
    """One client connection: password authentication, then registered with the live sessions."""

    def __init__(self, sessions: Sessions):
        self._sessions = sessions
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
        login = await asyncio.get_running_loop().run_in_executor(None, check_login, username, password)
        peer = self._conn.get_extra_info("peername")
        if login is None:
            log.info("gateway login refused", extra={"user": username, "peer": peer})
            return False
        self._conn.set_extra_info(robin_login=login)
        self._sessions.add(self._conn, login)
        log.info("gateway login", extra={"user": username, "peer": peer, "mount_path": login.mount_path})
        return True


def _sftp_session(chan: asyncssh.SSHServerChannel) -> ConfinedSFTPServer:
    return ConfinedSFTPServer(chan, chan.get_extra_info("robin_login").mount_path)


async def start(settings: Settings, sessions: Sessions, key: asyncssh.SSHKey) -> asyncssh.SSHAcceptor:
    return await asyncssh.create_server(
        lambda: _Connection(sessions), settings.gateway_host, settings.gateway_port,
        server_host_keys=[key], sftp_factory=_sftp_session, allow_scp=False,
        password_auth=True, kbdint_auth=False, public_key_auth=False, host_based_auth=False,
        gss_auth=False, gss_kex=False, agent_forwarding=False, x11_forwarding=False, allow_pty=False,
        login_timeout=LOGIN_TIMEOUT_S)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then end every session and stop."""
    sessions, stop = Sessions(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    key = load_host_key(Path(settings.gateway_dir))
    acceptor = await start(settings, sessions, key)
    log.info("gateway listening", extra={"host": settings.gateway_host, "port": settings.gateway_port,
                                         "host_key": key.get_fingerprint()})
    watcher = asyncio.create_task(sessions.watch(stop))
    await stop.wait()
    acceptor.close()
    sessions.end_all("the gateway is stopping")
    await acceptor.wait_closed()
    await watcher
    log.info("gateway stopped")


def run(settings: Settings) -> None:
    # asyncssh narrates every packet exchange at INFO; robin logs logins and ended sessions itself.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
