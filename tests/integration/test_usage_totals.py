"""The volume totals behind the scrape's project and pool gauges: summed per project and pool by the maintenance
leader (robin.audit.usage.store_totals), equal to a fresh sum of the rows after every kind of change, read by a
scrape without a look at any volume row, and gone with their project."""
from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import rbd
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from robin import maintenance
from robin.audit import usage
from robin.audit.models import VolumeTotal, VolumeUsage
from robin.clusters.models import CephCluster
from robin.db import db
from robin.projects.models import Project
from robin.volumes.models import VOLUME_MODELS, RbdImage, VolumeState
from tests.conftest import unique
from tests.support.costs import counting

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30
OBJECT = 4 * MiB  # RBD's default object size: used bytes come in whole objects


def scrape(client) -> dict:
    """{(metric, labels as sorted tuples): value}, read with prometheus_client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


def fresh_sums(app) -> dict:
    """Per (project, cluster, kind, pool): provisioned bytes, used bytes, volumes, summed here from the rows
    themselves, object by object, as a quota check would count them."""
    sums = defaultdict(lambda: [0, 0, 0])
    with app.app_context(), db.reading() as session:
        used = dict(session.execute(select(VolumeUsage.volume_id, VolumeUsage.used_bytes)).all())
        for model in VOLUME_MODELS:
            for volume in session.scalars(select(model).where(model.state != VolumeState.DELETED)).unique():
                kind, where = ("rbd", volume.pool) if model is RbdImage else ("cephfs", volume.fs_name)
                figures = sums[(volume.project.name, volume.cluster.name, kind, where)]
                figures[0] += volume.reserved_bytes
                figures[1] += used.get(volume.id, 0)
                figures[2] += 1
    return sums


def stored_totals(app) -> dict:
    with app.app_context(), db.reading() as session:
        rows = session.execute(select(Project.name, CephCluster.name, VolumeTotal.kind, VolumeTotal.location,
                                      VolumeTotal.provisioned_bytes, VolumeTotal.used_bytes, VolumeTotal.volumes)
                               .join(Project, Project.id == VolumeTotal.project_id)
                               .join(CephCluster, CephCluster.id == VolumeTotal.cluster_id)).all()
    return {tuple(row[:4]): list(row[4:]) for row in rows}


def assert_scrape_matches(scraped: dict, sums: dict, project: str) -> None:
    mine = [figures for (name, *_), figures in sums.items() if name == project]
    labels = (("project", project),)
    assert scraped[("robin_project_provisioned_bytes", labels)] == sum(f[0] for f in mine)
    assert scraped[("robin_project_volumes", labels)] == sum(f[2] for f in mine)
    if mine:
        assert scraped[("robin_project_used_bytes", labels)] == sum(f[1] for f in mine)
    else:  # a project without volumes reports no used bytes
        assert ("robin_project_used_bytes", labels) not in scraped
    pools = defaultdict(lambda: [0, 0, 0])
    for (_, cluster, kind, where), figures in sums.items():
        pools[(cluster, kind, where)] = [a + b for a, b in zip(pools[(cluster, kind, where)], figures, strict=True)]
    for (cluster, kind, where), (provisioned, used, volumes) in pools.items():
        labels = (("cluster", cluster), ("kind", kind), ("pool", where))
        assert scraped[("robin_pool_provisioned_bytes", labels)] == provisioned
        assert scraped[("robin_pool_used_bytes", labels)] == used
        assert scraped[("robin_pool_volumes", labels)] == volumes


def store(app) -> int:
    with app.app_context():
        return usage.store_totals()


def test_stored_totals_equal_a_fresh_sum_after_every_kind_of_change(app, admin, new_project, rbd_ioctx):
    project = new_project(max_bytes=20 * GiB, max_volumes=20)
    images, paths = f"/api/v2/projects/{project}/rbd-images", f"/api/v2/projects/{project}/cephfs-paths"
    names = [unique("img") for _ in range(3)]
    steps = {
        "create": [("post", images, {"name": name, "size_bytes": 64 * MiB}) for name in names]
        + [("post", paths, {"name": name, "quota_bytes": 64 * MiB}) for name in ("fs-a", "fs-b")],
        "resize": [("patch", f"{images}/{names[0]}", {"size_bytes": 128 * MiB}),
                   ("patch", f"{paths}/fs-a", {"quota_bytes": 256 * MiB})],
        "delete": [("delete", f"{images}/{names[1]}?purge=true", None)],
        "trash": [("delete", f"{images}/{names[2]}", None), ("delete", f"{paths}/fs-b", None)],
        "restore": [("post", f"{images}/{names[2]}/restore", None)],
    }
    for step, calls in steps.items():
        for method, url, body in calls:
            response = getattr(admin, method)(url, json=body) if body else getattr(admin, method)(url)
            assert response.status_code < 300, (step, url, response.json)
        if step == "create":  # used bytes too: one object written, measured
            with rbd.Image(rbd_ioctx, names[0]) as image:
                image.write(b"x" * MiB, 0)
            with app.app_context():
                assert usage.refresh(project_id=_project_id(app, project)).measured == 5
        store(app)
        sums = fresh_sums(app)
        assert stored_totals(app) == {key: figures for key, figures in sums.items() if figures[2]}, step
        assert_scrape_matches(scrape(admin), sums, project)
    assert scrape(admin)[("robin_project_used_bytes", (("project", project),))] == OBJECT


def _project_id(app, name: str) -> int:
    with app.app_context(), db.reading() as session:
        return session.scalar(select(Project.id).where(Project.name == name))


def test_a_scrape_reads_the_stored_totals_and_never_a_volume_row(app, admin, new_project):
    project = new_project()
    url = f"/api/v2/projects/{project}/rbd-images"
    assert admin.post(url, json={"name": unique("img"), "size_bytes": MiB}).status_code == 201
    store(app)
    with app.app_context(), db.reading() as session:
        summed_at = session.scalar(select(VolumeTotal.summed_at).limit(1))
    assert admin.post(url, json={"name": unique("img"), "size_bytes": MiB}).status_code == 201
    with counting(cold_tokens=False) as counted:
        scraped = scrape(admin)
    touched = [s for s in counted.statements if any(t in s for t in ("rbd_images", "cephfs_paths", "volume_usage"))]
    assert touched == [] and any("FROM volume_totals" in s for s in counted.statements)
    # The last pass's figures, and its time, until the next pass.
    assert scraped[("robin_project_volumes", (("project", project),))] == 1
    assert scraped[("robin_volume_totals_timestamp_seconds", ())] == pytest.approx(summed_at.timestamp(), abs=0.001)
    store(app)
    assert scrape(admin)[("robin_project_volumes", (("project", project),))] == 2


def test_with_no_totals_stored_a_scrape_sums_the_rows(app, admin, new_project):
    project = new_project()
    assert admin.post(f"/api/v2/projects/{project}/cephfs-paths",
                      json={"name": unique("fs"), "quota_bytes": 3 * MiB}).status_code == 201
    with app.app_context(), db.unit_of_work() as session:  # as before the maintenance loop's first round
        session.execute(delete(VolumeTotal))
    scraped = scrape(admin)
    assert scraped[("robin_project_provisioned_bytes", (("project", project),))] == 3 * MiB
    assert_scrape_matches(scraped, fresh_sums(app), project)


def test_totals_of_emptied_pools_and_deleted_projects_go(app, admin, new_project):
    project = new_project()
    url = f"/api/v2/projects/{project}/rbd-images"
    name = unique("img")
    assert admin.post(url, json={"name": name, "size_bytes": MiB}).status_code == 201
    store(app)
    assert [key for key in stored_totals(app) if key[0] == project]
    assert admin.delete(f"{url}/{name}?purge=true").status_code == 204
    store(app)
    assert not [key for key in stored_totals(app) if key[0] == project]
    scraped = scrape(admin)
    assert scraped[("robin_project_volumes", (("project", project),))] == 0
    assert ("robin_project_used_bytes", (("project", project),)) not in scraped
    # A project deleted between two passes takes its stored totals with it.
    other = new_project()
    other_url = f"/api/v2/projects/{other}/rbd-images"
    assert admin.post(other_url, json={"name": name, "size_bytes": MiB}).status_code == 201
    store(app)
    assert admin.delete(f"{other_url}/{name}?purge=true").status_code == 204
    assert admin.delete(f"/api/v2/projects/{other}").status_code == 204
    assert not [key for key in stored_totals(app) if key[0] == other]
    assert ("robin_project_volumes", (("project", other),)) not in scrape(admin)


def test_a_maintenance_round_stores_the_totals(app, admin, new_project):
    project = new_project()
    assert admin.post(f"/api/v2/projects/{project}/rbd-images",
                      json={"name": unique("img"), "size_bytes": 5 * MiB}).status_code == 201
    maintenance.run_once(app)
    assert stored_totals(app)[(project, "default", "rbd", "rbd")] == [5 * MiB, 0, 1]


def test_passes_at_once_all_complete(app, admin, new_project):
    """A leader stepping down while the next takes over may run a pass beside another: none fails."""
    project = new_project()
    assert admin.post(f"/api/v2/projects/{project}/rbd-images",
                      json={"name": unique("img"), "size_bytes": 7 * MiB}).status_code == 201
    with ThreadPoolExecutor(max_workers=4) as pool:  # many, for the passes to overlap
        stored = set(pool.map(lambda _: store(app), range(20)))
    assert len(stored) == 1 and stored_totals(app)[(project, "default", "rbd", "rbd")] == [7 * MiB, 0, 1]
