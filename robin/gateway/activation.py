"""Activation as the API sees it: record what is wanted, wait (bounded) for the gateway agent's report.

The API process never mounts, maps, freezes or checks anything: it writes the wanted state on the volume's
account row (service.py) and `robin gateway`, the node agent on the gateway's host (agent.py), carries it out and
reports on the same row. An activation or a deactivation waits up to ROBIN_GATEWAY_ACTIVATION_WAIT for that
report, so that /v1 answers as it did when the API mounted itself; an error the agent met comes back as that
error. Nobody reporting within the wait is a 503 `gateway_unavailable`:

- a first activation is withdrawn (no account is left; a mount the agent makes later is undone by it);
- a re-activation of a volume that is not mounted stays pending, and the status says so;
- a deactivation stays recorded: logins are refused already, and the agent unmounts when it is back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from robin import config
from robin.errors import Conflict, RobinError, ServiceUnavailable
from robin.gateway import service
from robin.gateway.models import GatewayAccount, MountState, VerifyState
from robin.volumes.models import CephfsPath, RbdImage

# A check still `verifying` after this died with its agent: shown as failed, and a new one may start.
STALE_VERIFY = timedelta(hours=1)
# How often a waiting request reads the account row: the agent reports within a reconcile interval of the change.
POLL_S = 0.2

Volume = RbdImage | CephfsPath


class GatewayUnavailable(ServiceUnavailable):
    code = "gateway_unavailable"


class AgentError(RobinError):
    """An error the agent met and recorded, raised again here with its code and HTTP status."""

    def __init__(self, message: str, *, code: str, status: int, details: dict | None = None):
        super().__init__(message, code=code, details=details)
        self.status = status


def _wait_s() -> float:
    return config.current().gateway_activation_wait


def _waited(account_id: int, done) -> GatewayAccount | None:
    """The account once `done(account)` holds (the account None: removed), or as it is when the wait is over."""
    deadline = time.monotonic() + _wait_s()
    while True:
        account = service.account(account_id)
        if done(account) or time.monotonic() >= deadline:
            return account
        time.sleep(POLL_S)


def _recorded_error(account: GatewayAccount, volume: Volume) -> AgentError:
    return AgentError(account.mount_error_message or "the gateway agent failed", code=account.mount_error_code,
                      status=account.mount_error_status or 500, details={"name": volume.name})


def activate(volume: Volume, username: str, password: str) -> None:
    """Record the activation and wait for the agent to mount the volume (a mounted one answers at once).
    An RBD image is mounted only while no node uses it: the agent refuses with 409 volume_in_use."""
    activated = service.activate(volume, username, password)
    if activated.mount_state is MountState.MOUNTED:
        return
    account = _waited(activated.account_id, lambda row: row is None or row.mount_state is not MountState.PENDING)
    if account is not None and account.mount_state is MountState.MOUNTED:
        return
    if account is not None and account.mount_state is MountState.FAILED:
        if activated.created:
            service.withdraw(activated.account_id)  # a failed first activation leaves nothing behind
        raise _recorded_error(account, volume)
    if account is None or account.mount_state is MountState.UNMOUNTING:
        raise Conflict(f"{volume.name!r} was deactivated by another request while the gateway agent mounted it; "
                       "activate it again", code="volume_deactivated", details={"name": volume.name})
    if activated.created and service.withdraw(activated.account_id):
        raise GatewayUnavailable(f"no gateway agent mounted {volume.name!r} within {_wait_s():g} s (is `robin "
                                 "gateway` running on the gateway's host?); nothing was activated, try again",
                                 details={"name": volume.name})
    raise GatewayUnavailable(f"no gateway agent mounted {volume.name!r} within {_wait_s():g} s (is `robin gateway` "
                             "running?); the activation is recorded and the agent mounts it when it runs",
                             details={"name": volume.name})


def deactivate(volume: Volume) -> bool:
    """Record the deactivation (logins are refused from now on) and wait for the agent to unmount the volume
    and remove its account; False when it was not activated."""
    account = service.deactivate(volume)
    if account is None:
        return False
    left = _waited(account.id, lambda row: row is None or row.mount_state is not MountState.UNMOUNTING
                   or row.mount_error_code is not None)
    if left is None or left.mount_state is not MountState.UNMOUNTING:
        return True  # unmounted and gone, or activated again meanwhile by another request
    if left.mount_error_code is not None:
        raise _recorded_error(left, volume)
    raise GatewayUnavailable(f"no gateway agent unmounted {volume.name!r} within {_wait_s():g} s (is `robin gateway` "
                             "running?); the deactivation is recorded, logins are refused, and the agent unmounts "
                             "it when it runs", details={"name": volume.name})


def forbid_login(volume: Volume) -> GatewayAccount:
    return service.forbid_login(volume)


@dataclass(frozen=True)
class Activation:
    """What holds now for an activated volume, as the agent last reported it: its account, its mount and its
    last check."""

    username: str
    mount_state: MountState
    login_forbidden: bool
    verify_state: VerifyState | None
    verify_message: str | None
    mount_error: str | None  # `code: message` of the agent's last failure

    @property
    def mounted(self) -> bool:
        return self.mount_state is MountState.MOUNTED


def activation_of(volume: Volume) -> Activation | None:
    """The volume's activation, None when it is not activated (or being deactivated). A check that never
    finished counts as failed."""
    account = service.account_of(volume)
    if account is None or account.mount_state is MountState.UNMOUNTING:
        return None
    verify, message = account.verify_state, account.verify_message
    if service.is_stale(account, STALE_VERIFY):
        verify, message = VerifyState.FAILED, f"the check started at {account.verified_at:%Y-%m-%dT%H:%M:%SZ} " \
                                              "never finished (the gateway agent restarted meanwhile?): verify again"
    error = f"{account.mount_error_code}: {account.mount_error_message}" if account.mount_error_code else None
    return Activation(account.username, account.mount_state, account.login_forbidden, verify, message, error)


def being_deactivated(volume: Volume) -> bool:
    account = service.account_of(volume)
    return account is not None and account.mount_state is MountState.UNMOUNTING


def verify(volume: Volume) -> Activation | None:
    """Ask the agent for a consistency check and answer at once with the activation as it is then (`Verifying`);
    the agent records the outcome in the account's verify fields."""
    service.start_verify(volume, STALE_VERIFY)
    return activation_of(volume)
