"""Ceph unreachable: a 503 with code ceph_unavailable within the configured timeout, nothing left behind."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from robin.volumes.models import RbdImage
from tests.conftest import unique
from tests.support.net import free_port

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


def test_readyz_reports_the_unreachable_cluster(anonymous, dead_cluster):
    response = anonymous.get("/readyz")
    assert response.status_code == 503
    checks = response.json["error"]["details"]["checks"]
    assert checks["database"] == "ok" and checks["ceph:default"] == "ok"
    assert checks[f"ceph:{dead_cluster}"].startswith("unavailable")
