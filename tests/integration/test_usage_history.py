"""Usage history: each refresh samples every project and pool, the maintenance loop folds old samples into
hourly and daily means (once, with two passes at once too), and the history endpoint averages them per step for
the project's readers."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import rbd
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, insert, select

from robin.audit import history, usage
from robin.audit.models import PoolUsageSample, ProjectUsageSample
from robin.clusters.models import CephCluster
from robin.db import db, utcnow
from robin.projects.models import Project
from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30
OBJECT = 4 * MiB  # RBD's default object size: used bytes come in whole objects
DAY = timedelta(days=1)


def project_id(app, name: str) -> int:
    with app.app_context(), db.reading() as session:
        return session.scalar(select(Project.id).where(Project.name == name))


def samples(app, name: str) -> list[tuple]:
    """The project's stored samples: (step, at, provisioned, used, quota, volumes), oldest first."""
    sample = ProjectUsageSample
    with app.app_context(), db.reading() as session:
        return [tuple(row) for row in session.execute(
            select(sample.step, sample.at, sample.provisioned_bytes, sample.used_bytes, sample.quota_bytes,
                   sample.volumes).where(sample.project_id == project_id(app, name)).order_by(sample.at))]


def write_samples(app, name: str, rows) -> None:
    """Samples at chosen times: rows of (step, at, provisioned, used, quota, volumes)."""
    pid = project_id(app, name)
    keys = ("step", "at", "provisioned_bytes", "used_bytes", "quota_bytes", "volumes")
    with app.app_context(), db.unit_of_work() as session:
        session.execute(insert(ProjectUsageSample), [{"project_id": pid, **dict(zip(keys, row, strict=True))}
                                                     for row in rows])


def refresh(app, name: str) -> usage.RefreshResult:
    with app.app_context():
        return usage.refresh(project_id=project_id(app, name))


def create_image(admin, project: str, size: int) -> str:
    name = unique("img")
    response = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": size})
    assert response.status_code == 201, response.json
    return name


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


# --- sampling -------------------------------------------------------------------------------------

def test_each_refresh_samples_every_project_and_pool(app, admin, new_project, rbd_ioctx):
    project, empty = new_project(max_bytes=10 * GiB), new_project(max_bytes=3 * GiB)
    image = create_image(admin, project, 64 * MiB)
    refresh(app, project)
    with rbd.Image(rbd_ioctx, image) as opened:
        opened.write(b"x" * MiB, 0)
    refresh(app, project)
    first, second = samples(app, project)
    assert [first[0], first[2:]] == [history.RAW, (64 * MiB, 0, 10 * GiB, 1)]
    assert [second[0], second[2:]] == [history.RAW, (64 * MiB, OBJECT, 10 * GiB, 1)] and second[1] > first[1]
    assert [row[2:] for row in samples(app, empty)] == [(0, 0, 3 * GiB, 0)] * 2  # every project, volumes or not
    with app.app_context(), db.reading() as session:
        pool = session.execute(select(PoolUsageSample.provisioned_bytes, PoolUsageSample.volumes)
                               .join(CephCluster, CephCluster.id == PoolUsageSample.cluster_id)
                               .where(CephCluster.name == "default", PoolUsageSample.kind == "rbd",
                                      PoolUsageSample.location == "rbd", PoolUsageSample.at == second[1])).one()
    assert pool.provisioned_bytes >= 64 * MiB and pool.volumes >= 1
    # The maintenance loop's refreshes sample once per usage.MAX_AGE, however often they run.
    with app.app_context():
        usage.refresh(stale_after=usage.MAX_AGE)
    assert len(samples(app, project)) == 2
    with app.app_context():
        with db.unit_of_work() as session:  # as if the newest sample were older than that
            session.execute(delete(ProjectUsageSample).where(ProjectUsageSample.at > utcnow() - usage.MAX_AGE))
        usage.refresh(stale_after=usage.MAX_AGE)
    assert [row[2:] for row in samples(app, project)] == [(64 * MiB, OBJECT, 10 * GiB, 1)]


def test_a_deleted_project_takes_its_history_with_it(app, admin, new_project):
    project = new_project()
    refresh(app, project)
    pid = project_id(app, project)
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204
    with app.app_context(), db.reading() as session:
        assert session.scalars(select(ProjectUsageSample).where(ProjectUsageSample.project_id == pid)).all() == []


# --- downsampling ---------------------------------------------------------------------------------

def _old_samples(now: datetime) -> tuple[list[tuple], datetime, datetime]:
    """Raw samples of two hours ten days ago, hourly means of two days a hundred days ago, daily means of two
    days eight hundred days ago, and one raw sample of an hour ago; with the hour and the day that fold."""
    hour = history.floor(now - 10 * DAY, history.HOUR)
    day = history.floor(now - 100 * DAY, history.DAY)
    raw = [(history.RAW, hour + timedelta(minutes=m), p, p // 2, GiB * q, v)
           for m, p, q, v in ((0, 100, 1, 1), (15, 200, 1, 2), (30, 300, 2, 2), (59, 400, 2, 4))]
    raw.append((history.RAW, hour + timedelta(hours=1), 1000, 500, 3 * GiB, 5))
    hourly = [(history.HOUR, day + timedelta(hours=h), 10 * h, 5 * h, GiB, h) for h in range(24)]
    hourly.append((history.HOUR, day + DAY, 7, 7, GiB, 7))
    daily = [(history.DAY, history.floor(now - 800 * DAY, history.DAY) + timedelta(days=d), 1, 1, GiB, 1)
             for d in (0, 1)]
    recent = [(history.RAW, now - timedelta(hours=1), 9, 9, GiB, 9)]
    return raw + hourly + daily + recent, hour, day


def test_downsampling_folds_each_sample_once_with_passes_at_once(app, new_project):
    project, now = new_project(), utcnow()
    rows, hour, day = _old_samples(now)
    write_samples(app, project, rows)
    with ThreadPoolExecutor(max_workers=4) as pool:  # two replicas' loops, and more
        list(pool.map(lambda _: _downsample(app, now), range(4)))
    assert samples(app, project) == [
        (history.DAY, day, round(sum(10 * h for h in range(24)) / 24), round(sum(5 * h for h in range(24)) / 24),
         GiB, round(sum(range(24)) / 24)),
        (history.DAY, day + DAY, 7, 7, GiB, 7),
        (history.HOUR, hour, 250, 125, 2 * GiB, 2),  # means (2.25 volumes round to 2), the hour's last quota
        (history.HOUR, hour + timedelta(hours=1), 1000, 500, 3 * GiB, 5),
        (history.RAW, now - timedelta(hours=1), 9, 9, GiB, 9),
    ]
    assert _downsample(app, now) == {"history_folded": 0, "history_dropped": 0}  # nothing left to do


def _downsample(app, now: datetime) -> dict:
    with app.app_context():
        return history.downsample(now, history.Retention(7 * DAY, 90 * DAY, 730 * DAY))


# --- the history endpoint -------------------------------------------------------------------------

def test_history_averages_the_samples_per_step(app, admin, new_project, as_role):
    project, now = new_project(max_bytes=4 * GiB), utcnow()
    create_image(admin, project, 8 * MiB)
    refresh(app, project)
    start = history.floor(now - 3 * DAY, history.DAY)
    write_samples(app, project, [(history.RAW, start + timedelta(minutes=m), 10 * m, m, GiB, 1)
                                 for m in (0, 10, 20, 70)])
    url = f"/api/v2/projects/{project}/usage/history"
    body = as_role("member", project).get(url).json  # the last week, in at most 500 points
    assert body["step_seconds"] == 1260 and body["retention_days"] == {"raw": 7, "hourly": 90, "daily": 730}
    assert [point["samples"] for point in body["points"]][-1] == 1
    assert body["points"][-1]["provisioned_bytes"] == 8 * MiB and body["points"][-1]["quota_bytes"] == 4 * GiB
    hourly = admin.get(url, query_string={"since": start.isoformat(), "until": (start + DAY).isoformat(),
                                          "step": 3600})
    assert hourly.status_code == 200, hourly.json
    assert [(p["at"], p["provisioned_bytes"], p["used_bytes"], p["samples"]) for p in hourly.json["points"]] == [
        (start.isoformat(), 100, 10, 3), ((start + timedelta(hours=1)).isoformat(), 700, 70, 1)]


def test_history_readers_and_refusals(app, admin, new_project, as_role):
    project, other = new_project(), new_project()
    refresh(app, project)
    url = f"/api/v2/projects/{project}/usage/history"
    before = samples(app, project)
    assert as_role("auditor").get(url).status_code == 200
    foreign = as_role("member", other).get(url)
    assert foreign.status_code == 403 and foreign.json["error"]["code"] == "forbidden"
    missing = admin.get(f"/api/v2/projects/{unique('p')}/usage/history")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "project_not_found"
    now = utcnow()
    for query, field in (({"since": now.isoformat(), "until": (now - DAY).isoformat()}, "until"),
                         ({"step": 59}, "step"), ({"since": (now - 400 * DAY).isoformat(), "step": 60}, "step"),
                         ({"since": "yesterday"}, "since")):
        refused = admin.get(url, query_string=query)
        assert refused.status_code == 422 and refused.json["error"]["code"] == "validation_error", query
        assert field in str(refused.json["error"]["details"]), refused.json
    too_many = admin.get(url, query_string={"since": (now - 400 * DAY).isoformat(), "step": 60}).json
    assert "ask a step of at least 3480 seconds" in str(too_many["error"]["details"])
    assert samples(app, project) == before  # reads leave nothing behind
