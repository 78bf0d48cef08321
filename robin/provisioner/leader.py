"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules.

A candidate takes the lease when it is free (no holder) or when the holder has not renewed it for
`lease_duration` as measured on the candidate's own clock since it last saw the lease change (never from
the timestamps in it, so clocks need not agree). Every write carries the resourceVersion read, so of two
candidates one wins and the other gets 409. The leader renews every `retry_period`; if it cannot renew for
`renew_deadline` it stops acting, before any other replica may take over. On shutdown it gives the lease up.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from robin.kube.client import Kube, KubeError

log = logging.getLogger(__name__)


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, lease_duration: float,
                 renew_deadline: float, retry_period: float, on_change: Callable[[bool], None]):
        self._kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self._duration, self._renew_deadline, self._retry = lease_duration, renew_deadline, retry_period
        self._on_change = on_change
        self.leading = threading.Event()
        self._observed: tuple | None = None  # (holder, renewTime, transitions) last read
        self._observed_at = 0.0  # monotonic time it last changed
        self._last_renewal = 0.0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                acquired = self._try_acquire_or_renew()
            except KubeError as exc:
                log.warning("leader election: lease %s/%s: %s", self.namespace, self.name, exc)
                acquired = False
            now = time.monotonic()
            if acquired:
                self._last_renewal = now
                self._set_leading(True)
            elif self.leading.is_set() and now - self._last_renewal >= self._renew_deadline:
                self._set_leading(False)
            stop.wait(self._retry)
        self.release()

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading.is_set():
            return
        if leading:
            self.leading.set()
            log.info("leader election: %s leads (lease %s/%s)", self.identity, self.namespace, self.name)
        else:
            self.leading.clear()
            log.warning("leader election: %s lost the lease %s/%s", self.identity, self.namespace, self.name)
        self._on_change(leading)

    def _try_acquire_or_renew(self) -> bool:
        try:
            lease = self._kube.call(self._kube.coordination.read_namespaced_lease, self.name, self.namespace)
        except KubeError as exc:
            if exc.status != 404:
                raise
            return self._create()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        if holder and holder != self.identity and time.monotonic() - self._observed_at < self._duration:
            return False  # held by another replica that renewed it recently
        return self._update(lease, taking_over=holder != self.identity)

    def _spec(self, transitions: int, acquire_time: str | None) -> dict:
        now = _micro_time()
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(round(self._duration)),
                "acquireTime": acquire_time or now, "renewTime": now, "leaseTransitions": transitions}

    def _create(self) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(0, None)}
        try:
            self._kube.call(self._kube.coordination.create_namespaced_lease, self.namespace, body)
        except KubeError as exc:
            if exc.status == 409:
                return False  # another candidate created it first
            raise
        return True

    def _update(self, lease: dict, taking_over: bool) -> bool:
        spec = lease.get("spec") or {}
        transitions = (spec.get("leaseTransitions") or 0) + (1 if taking_over else 0)
        lease = {**lease, "spec": self._spec(transitions, None if taking_over else spec.get("acquireTime"))}
        try:  # the resourceVersion in the body makes this a compare-and-swap
            self._kube.call(self._kube.coordination.replace_namespaced_lease, self.name, self.namespace, lease)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def release(self) -> None:
        """Gives the lease up, so that another replica takes over at once instead of after lease_duration."""
        if not self.leading.is_set():
            return
        self._set_leading(False)
        try:
            lease = self._kube.call(self._kube.coordination.read_namespaced_lease, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro_time()})
            self._kube.call(self._kube.coordination.replace_namespaced_lease, self.name, self.namespace, lease)
        except KubeError as exc:
            log.warning("leader election: could not release the lease: %s", exc)
