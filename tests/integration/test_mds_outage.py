"""A stopped MDS fails only the CephFS requests, within the timeout, in a worker whose other threads keep
serving RBD requests; once it answers again, so does the worker, and nothing was lost. Runs on the
session's cluster: the MDS gets SIGCONT in a finally and the test waits until CephFS answers again."""
from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import rbd
from sqlalchemy import select

from robin.dev.cluster import DevCluster
from robin.volumes.models import CephfsPath, VolumeState
from tests.conftest import cephfs_exists, unique
from tests.support.net import wait_until
from tests.support.outages import one_worker_server, timed

pytestmark = pytest.mark.integration
TIMEOUT_S = 3  # ROBIN_CEPH_TIMEOUT of the server under test
# A request that meets a stopped daemon answers within about one timeout; the rest is the machine's slack.
ANSWER_WITHIN_S = TIMEOUT_S * 1.7


@pytest.fixture()
def one_worker(database_url, ceph_conf, admin_token):
    with one_worker_server(database_url, ceph_conf, admin_token, TIMEOUT_S) as served:
        yield served


@contextmanager
def frozen_mds(ceph_conf, fs):
    pid = DevCluster(Path(ceph_conf).parent).status()["daemons"]["mds.a"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: cephfs_exists(fs, "/"), 60, "CephFS to answer again", interval=0.2)


def test_mds_stopped_does_not_freeze_rbd_requests(one_worker, new_project, ceph_conf, rbd_ioctx, fs, db_rows, app):
    from robin.reconcile.service import reconcile

    url, api = one_worker
    project = new_project()
    base = f"{url}/api/v2/projects/{project}"
    measured, late_path, images = unique("fs"), unique("fs"), [unique("img") for _ in range(3)]
    assert api.post(f"{base}/cephfs-paths", json={"name": measured, "quota_bytes": 2**26}).status_code == 201

    with frozen_mds(ceph_conf, fs), ThreadPoolExecutor(max_workers=5) as pool:
        used = pool.submit(timed, lambda: api.get(f"{base}/cephfs-paths/{measured}", params={"with_used": "true"},
                                                  timeout=60))
        made = pool.submit(timed, lambda: api.post(f"{base}/cephfs-paths", json={
            "name": late_path, "quota_bytes": 2**26}, timeout=60))
        creates = [pool.submit(timed, lambda n=name: api.post(f"{base}/rbd-images", json={
            "name": n, "size_bytes": 2**22}, timeout=60)) for name in images]
        for future in creates:
            response, elapsed = future.result()
            assert response.status_code == 201, response.text
            assert elapsed < ANSWER_WITHIN_S  # the RBD requests never wait on the MDS
        for future in (used, made):
            response, elapsed = future.result()
            assert response.status_code == 503 and response.json()["error"]["code"] == "ceph_unavailable"
            assert elapsed < ANSWER_WITHIN_S

    for name in images:
        with rbd.Image(rbd_ioctx, name, read_only=True) as image:
            assert image.size() == 2**22
    # The worker answers CephFS requests again, on a fresh connection.
    wait_until(lambda: api.get(f"{base}/cephfs-paths/{measured}", params={"with_used": "true"},
                               timeout=60).status_code == 200, 30, "the MDS's answers through robin", interval=0.5)
    # The create that timed out is left to the reconciler, which finds what Ceph has.
    with app.app_context():
        reconcile(timedelta(0))
    rows = db_rows(select(CephfsPath).where(CephfsPath.name == late_path))
    path = f"/robin/{project}/{late_path}"
    if rows:
        [row] = rows
        assert row.state is VolumeState.AVAILABLE
        assert fs.getxattr(path, "user.robin.volume_id").decode() == row.id
    else:
        assert not cephfs_exists(fs, path)
    assert api.post(f"{base}/cephfs-paths", json={"name": unique("fs"), "quota_bytes": 2**26}).status_code == 201
