"""Quota reservations hold under concurrency, across gunicorn worker processes."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import rbd
import requests
from sqlalchemy import select

from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique
from tests.support.server import running_server

pytestmark = pytest.mark.integration
GiB = 2**30
ATTEMPTS = 30


def test_thirty_concurrent_creates_against_a_ten_gib_quota(settings, admin_token, new_project, rbd_ioctx,
                                                          db_rows):
    project = new_project(max_bytes=10 * GiB, max_volumes=100)
    names = [unique("race") for _ in range(ATTEMPTS)]
    headers = {"Authorization": f"Bearer {admin_token}"}
    with running_server(settings.database_url, settings.ceph_conf, workers=4) as url:
        def create(name):
            return requests.post(f"{url}/api/v2/projects/{project}/rbd-images", headers=headers,
                                 json={"name": name, "size_bytes": GiB}, timeout=60)

        with ThreadPoolExecutor(max_workers=ATTEMPTS) as pool:
            responses = list(pool.map(create, names))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 10 + [403] * 20, [r.text for r in responses if r.status_code not in (201, 403)]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 403} == {"quota_exceeded"}
    created = {r.json()["name"] for r in responses if r.status_code == 201}
    assert set(rbd.RBD().list(rbd_ioctx)) & set(names) == created
    rows = db_rows(select(RbdImage).where(RbdImage.name.in_(names)))
    assert {r.name for r in rows} == created and all(r.state is VolumeState.AVAILABLE for r in rows)
