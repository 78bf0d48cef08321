"""Fault injection for crash tests: ROBIN_FAULT_POINTS=volume.create,snapshot.create,... makes the
process kill itself (SIGKILL, no cleanup, as a power cut or an OOM kill would) when it reaches a
named point, which is always between a Ceph call and the commit that records it. Unset in
production; read once at import."""
from __future__ import annotations

import os
import signal

ENV = "ROBIN_FAULT_POINTS"
_ARMED = frozenset(point.strip() for point in os.environ.get(ENV, "").split(",") if point.strip())


def crash_point(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
