"""Which RBD removals ask librbd for progress reports (robin.ceph.rbd_ops): only those that could outlast the
connection's timeout at the slowest rate assumed; tests/integration/test_rbd_ops.py shows both kinds on Ceph."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from robin.ceph import rbd_ops

MiB, GiB = 2**20, 2**30


@pytest.mark.parametrize(("size_bytes", "timeout_s", "reports"), [
    (64 * MiB, 10, False),
    (4000 * MiB, 10, False),  # 1,000 objects of 4 MiB: 10 s at 100 a second
    (4000 * MiB + 1, 10, True),  # one object more
    (1 * GiB, 2, True),  # 256 objects against the 200 a 2 s timeout allows
    (1 * GiB, 2.56, False),
])
def test_a_removal_asks_for_reports_only_when_it_could_outlast_the_timeout(size_bytes, timeout_s, reports):
    callback = rbd_ops._removal_progress(SimpleNamespace(timeout=timeout_s), size_bytes)
    assert (callback is not None) is reports
    if reports:
        assert callback(1, 2) == 0  # librbd goes on; outside a call the report reaches nothing and harms nothing
