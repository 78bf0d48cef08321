"""Attack 4 of the tenant isolation issue: /metrics names every project with its quota and usage, so only
admins, auditors and the dedicated scrape role may read it."""
from __future__ import annotations

import pytest

from tests.conftest import unique


def test_metrics_hides_projects_from_members(admin, as_role, new_project):
    mine, victim = new_project(), new_project(max_bytes=7 * 2**30)
    member = as_role("member", mine)
    response = member.get("/metrics")
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert "robin token create --role metrics" in response.json["error"]["message"]
    body = response.get_data(as_text=True)
    assert victim not in body and mine not in body and "robin_project_quota_bytes" not in body
    # Those trusted with every project still read the per-project series.
    for reader in (admin, as_role("auditor"), as_role("metrics")):
        text = reader.get("/metrics").get_data(as_text=True)
        assert f'robin_project_quota_bytes{{project="{victim}"}} 7516192768\n' in text


def test_metrics_token_is_read_only_elsewhere(as_role, new_project, db_rows):
    from sqlalchemy import select

    from robin.projects.models import Project

    project = new_project()
    scraper = as_role("metrics")
    assert scraper.get("/metrics").status_code == 200
    refused = [
        scraper.post("/api/v2/projects", json={"name": unique("p"), "quota": {
            "max_bytes": 2**30, "max_volumes": 1, "max_snapshots": 1}}),
        scraper.post(f"/api/v2/projects/{project}/rbd-images", json={"name": unique("img"), "size_bytes": 2**20}),
        scraper.delete(f"/api/v2/projects/{project}"),
        scraper.get(f"/api/v2/projects/{project}"),
        scraper.get(f"/api/v2/projects/{project}/rbd-images"),
        scraper.get("/api/v2/clusters"),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    assert all(response.json["error"]["code"] == "forbidden" for response in refused)
    assert scraper.get("/api/v2/projects").json["items"] == []
    assert [row.name for row in db_rows(select(Project).where(Project.name == project))] == [project]


def test_metrics_role_needs_no_project(app):
    from robin.auth.models import Role
    from robin.auth.service import create_token
    from robin.errors import InvalidInput

    with app.app_context(), pytest.raises(InvalidInput, match="member token needs exactly one project"):
        create_token(Role.METRICS, project="anything")


@pytest.mark.usefixtures("ceph_conf")  # probes Ceph
def test_cluster_health_is_the_last_recorded_probe_never_a_new_one(app, as_role):
    from sqlalchemy import delete

    from robin.audit.models import ClusterProbe
    from robin.db import db
    from robin.health import record_cluster_probes
    from tests.support.ceph_calls import ceph_calls

    scraper = as_role("metrics")
    with db.unit_of_work() as session:
        session.execute(delete(ClusterProbe))  # as before the maintenance loop's first round
    calls = ceph_calls()
    unprobed = scraper.get("/metrics").get_data(as_text=True)
    assert ceph_calls() == calls and "robin_ceph_cluster_up{" not in unprobed
    with app.app_context():
        record_cluster_probes()
    calls = ceph_calls()
    scraped = scraper.get("/metrics").get_data(as_text=True)
    assert ceph_calls() == calls
    assert 'robin_ceph_cluster_up{cluster="default"} 1.0' in scraped
    [age] = [float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
             if line.startswith('robin_ceph_cluster_probe_age_seconds{cluster="default"}')]
    assert age >= 0
