"""Ceph unreachable: a 503 with code ceph_unavailable within the configured timeout, nothing left behind."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from robin.health import record_cluster_probes
from robin.volumes.models import RbdImage
from tests.conftest import unique
from tests.support.net import free_port
from tests.support.outages import timed

pytestmark = pytest.mark.integration


@pytest.fixture()
def dead_cluster(admin, tmp_path, ceph_conf):
    """A registered cluster whose only monitor address has nothing listening."""
    keyring = next(line.split("=", 1)[1].strip() for line in open(ceph_conf) if line.strip().startswith("keyring"))
    conf = tmp_path / "dead.conf"
    conf.write_text(f"[global]\nmon host = v1:127.0.0.1:{free_port()}\nkeyring = {keyring}\n")
    name = unique("dead")
    assert admin.post("/api/v2/clusters", json={"name": name, "conf_path": str(conf)}).status_code == 201
    yield name
    assert admin.delete(f"/api/v2/clusters/{name}").status_code == 204


def test_create_on_unreachable_cluster_is_503_and_leaves_nothing(admin, new_project, dead_cluster, settings,
                                                                 db_rows):
    project = new_project()
    name = unique("img")
    started = time.monotonic()
    response = admin.post(f"/api/v2/projects/{project}/rbd-images",
                          json={"name": name, "size_bytes": 2**20, "cluster": dead_cluster})
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json["error"]["code"] == "ceph_unavailable"
    # Bounded by the configured timeout (plus slack for the machine), not hung.
    assert elapsed < settings.ceph_timeout * 3
    assert db_rows(select(RbdImage).where(RbdImage.name == name)) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0


def test_unreachable_cluster_costs_one_timeout_not_one_per_call(admin, new_project, dead_cluster, settings):
    # A drift survey or a reconcile round asks a cluster many times: after a failed connect, the next calls
    # fail at once (robin connects again a timeout later) instead of waiting out a timeout each.
    project = new_project()

    def create():
        return timed(lambda: admin.post(f"/api/v2/projects/{project}/rbd-images", json={
            "name": unique("img"), "size_bytes": 2**20, "cluster": dead_cluster}))

    (first, first_s), (second, second_s) = create(), create()
    assert first.status_code == second.status_code == 503
    assert first_s < settings.ceph_timeout * 3
    assert second_s < settings.ceph_timeout / 3
    assert second.json["error"]["code"] == "ceph_unavailable" and dead_cluster in second.json["error"]["message"]


def test_readyz_follows_default_cluster_io_not_other_clusters(app, anonymous, admin, dead_cluster):
    # Another cluster being down fails only its own volumes' requests: robin stays ready.
    response = anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "ceph:default": "ok"}
    # Its health shows in the registry's listing and in the metrics instead.
    listed = {cluster["name"]: cluster for cluster in admin.get("/api/v2/clusters").json}
    assert listed[dead_cluster]["up"] is False and listed[dead_cluster]["health"].startswith("unavailable")
    assert listed["default"]["up"] is True and listed["default"]["health"] == "ok"
    with app.app_context():
        record_cluster_probes()  # the maintenance loop's probe: the scrape reads what it recorded
    scraped = admin.get("/metrics").get_data(as_text=True)
    assert f'robin_ceph_cluster_up{{cluster="{dead_cluster}"}} 0.0' in scraped
    assert 'robin_ceph_cluster_up{cluster="default"} 1.0' in scraped
