"""The CSI shim against robin (gunicorn, the session's database) and the real dev cluster, as root, with real
mounts (rbd-fuse + loop device + mkfs for RBD, ceph-fuse for CephFS)."""
from __future__ import annotations

import os

import pytest

from tests.support.csi import ShimProcess, cephx_key


@pytest.fixture(scope="session")
def node_secrets(ceph_conf) -> dict[str, str]:
    """What a Kubernetes Secret gives the node (csi.storage.k8s.io/node-stage-secret-*): a Ceph user and key."""
    return {"userID": "admin", "userKey": cephx_key(ceph_conf)}


@pytest.fixture
def start_shim(robin_url, admin_token, request):
    """start_shim(mode=..., node_id=..., token=...) -> a running ShimProcess (robin's token: an admin's unless
    given); all are stopped afterwards, logs printed."""
    if os.geteuid() != 0:
        pytest.skip("the CSI node service mounts file systems: run as root")
    started: list[ShimProcess] = []

    def start(token: str | None = None, **kwargs) -> ShimProcess:
        shim = ShimProcess(robin_url, token or admin_token, **kwargs)
        started.append(shim)
        return shim

    yield start
    for shim in started:
        shim.stop()
        print(f"--- csi_shim log ({shim.directory}) ---\n{shim.log()[-4000:]}")


@pytest.fixture
def shim(start_shim) -> ShimProcess:
    return start_shim()
