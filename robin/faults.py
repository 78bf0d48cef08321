"""Fault injection for crash tests: ROBIN_FAULT_POINTS=volume.create,snapshot.create,... makes the
process kill itself (SIGKILL, no cleanup, as a power cut or an OOM kill would) when it reaches a
named point, which is always between a Ceph call and the commit that records it. `name@N` kills at
the Nth time the point is reached instead of the first (half-way through a copy). Unset in
production; read once at import."""
from __future__ import annotations

import itertools
import os
import signal

from robin import config


def _armed(spec: str) -> dict[str, int]:
    points = {}
    for point in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = point.partition("@")
        points[name] = int(nth) if nth else 1
    return points


_ARMED = _armed(config.fault_points())
_REACHED = {name: itertools.count(1) for name in _ARMED}  # next() is atomic under the GIL: threads may share one


def crash_point(name: str) -> None:
    if name in _ARMED and next(_REACHED[name]) >= _ARMED[name]:
        os.kill(os.getpid(), signal.SIGKILL)
