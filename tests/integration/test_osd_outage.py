"""An OSD that stops answering mid-operation: 503 within the timeouts, and no row claims an image
that may not exist. Runs on a cluster of its own, so freezing its OSD disturbs no other test."""
from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from robin.dev.cluster import DevCluster
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique

pytestmark = pytest.mark.integration


class FrozenOsd:
    def __init__(self, cluster: DevCluster):
        self.pid = cluster.status()["daemons"]["osd.0"]["pid"]
        self.frozen = False

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            os.kill(self.pid, signal.SIGCONT)
            self.frozen = False


@pytest.fixture()
def outage(admin):
    """(registered cluster name, its OSD) on a cluster of this test's own; all undone afterwards."""
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="ro", dir="/tmp")))
    osd = None
    try:
        conf = cluster.up()
        name = unique("outage")
        assert admin.post("/api/v2/clusters", json={"name": name, "conf_path": str(conf)}).status_code == 201
        osd = FrozenOsd(cluster)
        yield name, osd
        assert admin.delete(f"/api/v2/clusters/{name}").status_code == 204
    finally:
        if osd:
            osd.thaw()
        cluster.down()


def test_osd_stopped_create_fails_within_one_timeout(admin, new_project, outage, settings, db_rows):
    cluster, osd = outage
    project = new_project()
    name = unique("img")
    osd.freeze()
    started = time.monotonic()
    response = admin.post(f"/api/v2/projects/{project}/rbd-images",
                          json={"name": name, "size_bytes": 2**20, "cluster": cluster})
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.json["error"]["code"] == "ceph_unavailable"
    # One timeout, not a second one for an undo in the request: that is the reconciler's.
    assert elapsed < settings.ceph_timeout * 1.7
    # The default cluster is another: robin stays ready, and the stopped OSD shows in the cluster's health.
    assert admin.get("/readyz").status_code == 200
    listed = {found["name"]: found for found in admin.get("/api/v2/clusters").json}
    assert listed[cluster]["up"] is False
    [row] = db_rows(select(RbdImage).where(RbdImage.name == name))
    # The image's fate is unknown: the row stays, in error, still holding its quota.
    assert row.state is VolumeState.ERROR and "create failed" in row.error_message
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 2**20

    osd.thaw()
    # Deleting an error row removes whatever Ceph has (idempotently) and releases the quota.
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}").status_code == 204
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204  # takes the deleted rows along
