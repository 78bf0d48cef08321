"""Fixtures of the integration tests: a second Ceph cluster, and no dead client's CephFS session left behind."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from robin.dev.cluster import DevCluster
from tests.conftest import unique
from tests.support.outages import evict_dead_cephfs_sessions


@pytest.fixture(scope="module", autouse=True)
def no_dead_cephfs_sessions(ceph_conf):
    """After each module: tests that kill robin's workers (crashes, replicas lost) leave MDS sessions holding
    capabilities, which stall every later CephFS call on those directories for the MDS session timeout (60 s).
    An operator evicts them (docs/replicas.md); so does the suite, between modules."""
    yield
    evict_dead_cephfs_sessions(ceph_conf)


@pytest.fixture(scope="module")
def second_cluster():
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="r2", dir="/tmp")))
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture()
def registered(admin, second_cluster):
    """register(**how) -> name; everything placed on it is purged and it is unregistered after."""
    names = []

    def register(**how) -> str:
        name = unique("c2")
        response = admin.post("/api/v2/clusters", json={"name": name, **how})
        assert response.status_code == 201, response.json
        assert "key" not in response.json and "cephx_key" not in response.json
        names.append(name)
        return name

    yield register
    for name in names:
        assert admin.delete(f"/api/v2/clusters/{name}").status_code == 204
