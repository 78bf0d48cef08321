"""Live SFTP connections per account, and the watcher that ends them when the account says so.

The API runs in other processes, so it cannot reach a connection; it changes the account's row, and
the watcher (one query every POLL_INTERVAL_S while anyone is connected) ends every connection whose
account was removed or deactivated, became login-forbidden or got another mount path, and every connection
whose mount is gone. Its descriptors closed, the mount can then be unmounted.
"""
from __future__ import annotations

import asyncio
import logging

import asyncssh
from sqlalchemy.exc import SQLAlchemyError

from robin.gateway import service
from robin.gateway.mountinfo import mount_points
from robin.gateway.service import AccountState, Login

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.5


def why_end(login: Login, state: AccountState | None, mounted: set[str]) -> str | None:
    """Why a session of `login` may not go on, or None."""
    if state is None:
        return "the account was removed"  # or is being deactivated
    if state.login_forbidden:
        return "login is forbidden"
    if state.mount_path != login.mount_path:
        return "the volume was mounted elsewhere"
    if login.mount_path not in mounted:
        return "the volume is no longer mounted"
    return None


class Sessions:
    def __init__(self) -> None:
        self._live: dict[asyncssh.SSHServerConnection, Login] = {}

    def add(self, conn: asyncssh.SSHServerConnection, login: Login) -> None:
        self._live[conn] = login

    def discard(self, conn: asyncssh.SSHServerConnection) -> None:
        self._live.pop(conn, None)

    def end(self, conn: asyncssh.SSHServerConnection, reason: str) -> None:
        login = self._live.pop(conn, None)
        if login is not None:
            log.info("gateway session ended", extra={"user": login.username, "reason": reason})
        conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    def end_all(self, reason: str) -> None:
        for conn in list(self._live):
            self.end(conn, reason)

    async def watch(self, stop: asyncio.Event, interval: float = POLL_INTERVAL_S) -> None:
        """Until `stop` is set, end the sessions their accounts no longer allow."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if self._live:
                # Only these are judged: a login arriving during the query was not asked about.
                watched = dict(self._live)
                try:
                    usernames = sorted({login.username for login in watched.values()})
                    states = await loop.run_in_executor(None, service.account_states, usernames)
                    self._enforce(watched, states, mount_points())
                except (SQLAlchemyError, OSError) as exc:
                    # Sessions go on: while the database is away, nobody can change an account either.
                    log.warning("gateway cannot read the accounts", extra={"error": str(exc)})
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    def _enforce(self, watched: dict, states: dict[str, AccountState], mounted: set[str]) -> None:
        for conn, login in watched.items():
            reason = why_end(login, states.get(login.username), mounted)
            if reason is not None and conn in self._live:
                self.end(conn, reason)
