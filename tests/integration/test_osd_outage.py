"""An OSD that stops answering mid-operation: 503 within the timeouts, and no row claims an image
that may not exist. Runs on a cluster of its own, so freezing its OSD disturbs no other test; only the
readiness test stops the session cluster's OSD (SIGCONT in a finally, then it waits until robin is
ready again)."""
from __future__ import annotations

import os
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import NamedTuple

import cephfs
import pytest
import rados
import rbd
from sqlalchemy import select

from robin.ceph.cephfs_ops import OWNER_XATTR
from robin.clusters.service import HEALTH_PROBE_TIMEOUT_S, HEALTH_TTL_S
from robin.dev.cluster import DevCluster
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.conftest import cephfs_exists, unique
from tests.support.net import wait_until
from tests.support.outages import one_worker_server, timed

pytestmark = pytest.mark.integration
TIMEOUT_S = 3  # ROBIN_CEPH_TIMEOUT of the one-worker server
# A request that meets the stopped OSD answers within about one timeout; the rest is the machine's slack.
ANSWER_WITHIN_S = TIMEOUT_S * 1.7
# Readiness follows a probe cached for HEALTH_TTL_S that gives up after HEALTH_PROBE_TIMEOUT_S.
READINESS_FOLLOWS_WITHIN_S = HEALTH_TTL_S + HEALTH_PROBE_TIMEOUT_S + 5


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


class Outage(NamedTuple):
    name: str  # as registered in robin
    osd: FrozenOsd
    conf: str


@pytest.fixture()
def outage(admin):
    """A cluster of this test's own, registered in robin; all undone afterwards."""
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="ro", dir="/tmp")))
    osd = None
    try:
        conf = cluster.up()
        name = unique("outage")
        assert admin.post("/api/v2/clusters", json={"name": name, "conf_path": str(conf)}).status_code == 201
        osd = FrozenOsd(cluster)
        yield Outage(name, osd, str(conf))
        assert admin.delete(f"/api/v2/clusters/{name}").status_code == 204
    finally:
        if osd:
            osd.thaw()
        cluster.down()


def test_osd_stopped_create_fails_within_one_timeout(admin, new_project, outage, settings, db_rows):
    cluster, osd, _ = outage
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
    # Deleting an error row removes whatever Ceph has (idempotently) and releases the quota; purged at once, as a
    # project is not deleted while its trash holds a volume.
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}?purge=true").status_code == 204
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204  # takes the deleted rows along


def test_osd_stopped_resize_and_purge_stay_for_the_reconciler(admin, new_project, outage, db_rows, app):
    """A resize or a purge that Ceph leaves unanswered may have happened (librbd goes on after robin stops waiting):
    the rows keep their transitional states, never `available`, until the reconciler finishes them."""
    from robin.reconcile.service import reconcile

    cluster, osd, conf = outage
    project = new_project()
    base = f"/api/v2/projects/{project}/rbd-images"
    grown, doomed = unique("img"), unique("img")
    for name in (grown, doomed):
        assert admin.post(base, json={"name": name, "size_bytes": 2**22, "cluster": cluster}).status_code == 201
    osd.freeze()
    try:
        resized = admin.patch(f"{base}/{grown}", json={"size_bytes": 2**23})
        purged = admin.delete(f"{base}/{doomed}?purge=true")
        again = admin.delete(f"{base}/{doomed}?purge=true")
    finally:
        osd.thaw()
    assert resized.status_code == 503 and resized.json["error"]["code"] == "ceph_unavailable"
    assert purged.status_code == 503 and purged.json["error"]["code"] == "ceph_unavailable"
    assert again.status_code == 409 and again.json["error"]["code"] == "volume_busy"
    [resizing] = db_rows(select(RbdImage).where(RbdImage.name == grown))
    [deleting] = db_rows(select(RbdImage).where(RbdImage.name == doomed))
    assert (resizing.state, resizing.size_bytes, resizing.target_size_bytes) == (VolumeState.RESIZING, 2**22, 2**23)
    assert deleting.state is VolumeState.DELETING
    # Both still hold their quota: the resize its target.
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 2**23 + 2**22

    wait_until(lambda: {found["name"]: found for found in admin.get("/api/v2/clusters").json}[cluster]["up"], 30,
               "the OSD to answer robin again", interval=0.5)
    with app.app_context():
        report = reconcile(timedelta(0))
    assert [error for error in report.errors if error["name"] in (grown, doomed)] == []
    [resized_row] = db_rows(select(RbdImage).where(RbdImage.name == grown))
    [deleted_row] = db_rows(select(RbdImage).where(RbdImage.name == doomed))
    assert (resized_row.state, resized_row.size_bytes, resized_row.target_size_bytes) == (
        VolumeState.AVAILABLE, 2**23, None)
    assert deleted_row.state is VolumeState.DELETED
    with cluster_handles(conf) as (ioctx, _):
        with rbd.Image(ioctx, grown, read_only=True) as image:
            assert image.size() == 2**23
        assert doomed not in rbd.RBD().list(ioctx)
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 2**23
    assert admin.delete(f"{base}/{grown}?purge=true").status_code == 204
    # Unless Ceph had removed the image after robin stopped waiting, the reconciler finished the delete into the trash
    # (whether a purge was asked is not recorded), where it would hold the project's delete until its purge: purged
    # now, as an admin would. (Not purge_due: that purges every test's trash.)
    if deleted_row.trash_ref is not None:
        assert admin.post(f"{base}/{doomed}/purge", query_string={"id": deleted_row.id}).status_code == 204
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


def test_osd_stopped_concurrent_requests_in_one_worker_all_return(outage, database_url, ceph_conf, admin_token,
                                                                  new_project, app, db_rows):
    from robin.reconcile.service import reconcile

    project = new_project()
    images, paths = [unique("img") for _ in range(3)], [unique("fs") for _ in range(2)]
    # The worker does all CephFS work, its cleanup included: a stopped worker holds its capabilities until the MDS
    # evicts it.
    with one_worker_server(database_url, ceph_conf, admin_token, TIMEOUT_S) as (url, api):
        base = f"{url}/api/v2/projects/{project}"

        def create(kind: str, name: str):
            size = {"size_bytes": 2**22} if kind == "rbd-images" else {"quota_bytes": 2**26}
            return api.post(f"{base}/{kind}", json={"name": name, "cluster": outage.name, **size}, timeout=60)

        try:
            # The worker's connection to the cluster is made, and its file system mounted, while the OSD answers.
            assert create("cephfs-paths", unique("fs")).status_code == 201
            outage.osd.freeze()
            try:
                with ThreadPoolExecutor(max_workers=len(images) + len(paths)) as pool:
                    answers = [(kind, pool.submit(timed, partial(create, kind, name)))
                               for kind, names in (("rbd-images", images), ("cephfs-paths", paths)) for name in names]
                    for kind, answer in answers:
                        response, elapsed = answer.result()
                        assert elapsed < ANSWER_WITHIN_S, (kind, elapsed)
                        # An image needs the OSD; the MDS may acknowledge a directory before its journal reaches it.
                        assert response.status_code in ((503,) if kind == "rbd-images" else (201, 503)), response.text
                        if response.status_code == 503:
                            assert response.json()["error"]["code"] == "ceph_unavailable"
            finally:
                outage.osd.thaw()
            wait_until(lambda: _listed(api, url)[outage.name]["up"], 30, "the OSD to answer robin again", interval=0.5)
            for kind, names, late in (("rbd-images", images, unique("img")), ("cephfs-paths", paths, unique("fs"))):
                assert create(kind, late).status_code == 201
                names.append(late)

            # The timed-out creates are the reconciler's to settle.
            with app.app_context():
                report = reconcile(timedelta(0))
            assert [error for error in report.errors if error["name"] in images + paths] == []
            with cluster_handles(outage.conf) as (ioctx, fs):
                in_ceph = set(rbd.RBD().list(ioctx))
                for name in images:
                    rows = db_rows(select(RbdImage).where(RbdImage.name == name))
                    assert [row.state for row in rows] == ([VolumeState.AVAILABLE] if name in in_ceph else []), name
                for name in paths:
                    rows = db_rows(select(CephfsPath).where(CephfsPath.name == name))
                    path = f"/robin/{project}/{name}"
                    expected = [(VolumeState.AVAILABLE, owner_of(fs, path))] if cephfs_exists(fs, path) else []
                    assert [(row.state, row.id) for row in rows] == expected, name
        finally:
            delete_project(api, base)


def _listed(api, url) -> dict:
    return {cluster["name"]: cluster for cluster in api.get(f"{url}/api/v2/clusters", timeout=30).json()}


@contextmanager
def cluster_handles(conf: str):
    """(the rbd pool's I/O context, a CephFS client) on a cluster, to see what robin left there."""
    cluster = rados.Rados(conffile=conf)
    cluster.connect()
    try:
        with cluster.open_ioctx("rbd") as ioctx:
            fs = cephfs.LibCephFS(rados_inst=cluster)
            fs.mount(filesystem_name=b"cephfs")
            try:
                yield ioctx, fs
            finally:
                fs.shutdown()
    finally:
        cluster.shutdown()


def owner_of(fs, path: str) -> str | None:
    """The volume id robin marked the directory with, if it did."""
    try:
        return fs.getxattr(path, OWNER_XATTR).decode()
    except cephfs.NoData:
        return None


def delete_project(api, base: str) -> None:
    """Its volumes, purged (a project is not deleted while its trash holds any), then itself, so that its cluster
    can be unregistered."""
    for kind in ("rbd-images", "cephfs-paths"):
        for volume in api.get(f"{base}/{kind}", timeout=60).json()["items"]:
            assert api.delete(f"{base}/{kind}/{volume['name']}?purge=true", timeout=60).status_code == 204
    assert api.delete(base, timeout=60).status_code == 204


def test_readyz_is_503_while_the_default_clusters_osd_is_stopped(anonymous, ceph_conf):
    def status() -> int:
        return anonymous.get("/readyz").status_code

    wait_until(lambda: status() == 200, READINESS_FOLLOWS_WITHIN_S, "robin to be ready")
    osd = FrozenOsd(DevCluster(Path(ceph_conf).parent))
    try:
        osd.freeze()
        wait_until(lambda: status() == 503, READINESS_FOLLOWS_WITHIN_S, "readiness to see the stopped OSD")
        checks = anonymous.get("/readyz").json["error"]["details"]["checks"]
        assert checks["database"] == "ok" and checks["ceph:default"].startswith("unavailable")
    finally:
        osd.thaw()
        wait_until(lambda: status() == 200, READINESS_FOLLOWS_WITHIN_S, "readiness once the OSD answers again")
