"""Usage history and forecasts: each refresh samples every project and pool, the maintenance loop folds old
samples into hourly and daily means (once, with two passes at once too), the history endpoint averages them per
step for the project's readers, and the forecast fits a least-squares line whose arithmetic is checked on known
numbers; the scrape's robin_project_quota_exhaustion_seconds comes from the stored forecast, never from the
samples."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import rbd
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, insert, select

from robin import maintenance
from robin.audit import forecast, history, usage
from robin.audit.models import PoolUsageSample, ProjectUsageSample, UsageForecast
from robin.clusters.models import CephCluster
from robin.db import db, utcnow
from robin.projects.models import Project
from tests.conftest import unique
from tests.support.costs import counting

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
        for model in (ProjectUsageSample, UsageForecast):
            assert session.scalars(select(model).where(model.project_id == pid)).all() == []


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


def test_a_maintenance_round_folds_the_history(app, new_project):
    project, now = new_project(), utcnow()
    hour = history.floor(now - 8 * DAY, history.HOUR)
    write_samples(app, project, [(history.RAW, hour + timedelta(minutes=m), 10 * m, 0, GiB, 1) for m in (0, 30)])
    maintenance.run_once(app)
    assert [row for row in samples(app, project) if row[1] < now - DAY] == [(history.HOUR, hour, 150, 0, GiB, 1)]


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
                         ({"since": "yesterday"}, "since"), ({"until": "0001-01-02T00:00:00Z"}, "until")):
        refused = admin.get(url, query_string=query)
        assert refused.status_code == 422 and refused.json["error"]["code"] == "validation_error", query
        assert field in str(refused.json["error"]["details"]), refused.json
    too_many = admin.get(url, query_string={"since": (now - 400 * DAY).isoformat(), "step": 60}).json
    assert "ask a step of at least 3480 seconds" in str(too_many["error"]["details"])
    assert samples(app, project) == before  # reads leave nothing behind


# --- forecasts ------------------------------------------------------------------------------------

def test_the_fit_on_known_numbers(app, admin, new_project, as_role):
    """Provisioned 0, 1, 1, 3 GiB on four days in a row: mean day 1.5, mean 1.25 GiB, covariance sum 4.5, variance
    sum 5, so 0.9 GiB a day; from 3 GiB, 9 GiB more to a 12 GiB quota take 10 days. Used shrinks: never."""
    growing, flat, single, empty, full = (new_project(max_bytes=12 * GiB) for _ in range(5))
    now = utcnow()
    days = [now - timedelta(days=4 - k) for k in range(4)]
    write_samples(app, growing, [(history.RAW, at, p * GiB, (4 - k) * GiB, 12 * GiB, 1)
                                 for k, (at, p) in enumerate(zip(days, (0, 1, 1, 3), strict=True))])
    write_samples(app, flat, [(history.RAW, at, 2 * GiB, GiB, 12 * GiB, 1) for at in days])
    write_samples(app, single, [(history.RAW, days[-1], GiB, GiB, 12 * GiB, 1)])
    write_samples(app, full, [(history.RAW, at, 12 * GiB, GiB, 12 * GiB, 1) for at in days])
    response = as_role("auditor").get("/api/v2/audit/usage/forecast")
    assert response.status_code == 200, response.json
    found = {row["project"]: row for row in response.json["projects"]}
    assert response.json["window_days"] == 14
    grows = found[growing]
    assert grows["provisioned"]["growth_bytes_per_day"] == pytest.approx(0.9 * GiB, rel=1e-6)
    assert _time(grows["provisioned"]["full_at"]) == pytest.approx((days[-1] + 10 * DAY).timestamp(), abs=1)
    assert grows["used"]["growth_bytes_per_day"] == pytest.approx(-GiB, rel=1e-6)
    assert (grows["used"]["full_at"], grows["used"]["reason"]) == (None, forecast.NOT_GROWING)
    assert grows["full_at"] == grows["provisioned"]["full_at"] and grows["samples"] == 4
    assert grows["seconds_left"] == pytest.approx(9 * 86400, abs=60)
    assert found[flat]["provisioned"]["reason"] == forecast.NOT_GROWING and found[flat]["full_at"] is None
    assert found[single]["provisioned"]["reason"] == forecast.TOO_FEW_SAMPLES
    assert found[empty]["provisioned"]["reason"] == forecast.NO_SAMPLES and found[empty]["samples"] == 0
    assert _time(found[full]["full_at"]) == pytest.approx(days[-1].timestamp(), abs=1)  # at its quota already
    assert found[full]["seconds_left"] == 0
    order = [row["project"] for row in response.json["projects"] if row["project"] in found and row["project"]
             in (growing, flat, single, empty, full)]
    assert order == [full, growing, *sorted((flat, single, empty))]  # soonest first, then never, by name
    # A shorter window fits the last two days only: 1 to 3 GiB, 2 GiB a day, 4.5 days from 3 GiB to 12 GiB.
    short = {row["project"]: row for row in admin.get("/api/v2/audit/usage/forecast",
                                                      query_string={"window_days": 3}).json["projects"]}
    assert short[growing]["provisioned"]["growth_bytes_per_day"] == pytest.approx(2 * GiB, rel=1e-6)
    assert _time(short[growing]["full_at"]) == pytest.approx((days[-1] + 4.5 * DAY).timestamp(), abs=1)


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_forecast_readers_and_refusals(as_role, admin, new_project):
    project = new_project()
    refused = as_role("member", project).get("/api/v2/audit/usage/forecast")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    for window in (0, 3661, "a week"):
        bad = admin.get("/api/v2/audit/usage/forecast", query_string={"window_days": window})
        assert bad.status_code == 422 and bad.json["error"]["code"] == "validation_error", window


def test_real_refreshes_feed_the_forecast_and_the_scrape_reads_it_stored(app, admin, new_project, rbd_ioctx):
    project = new_project(max_bytes=GiB)
    image = create_image(admin, project, 512 * MiB)
    refresh(app, project)
    with rbd.Image(rbd_ioctx, image) as opened:
        opened.write(b"x" * (8 * MiB), 0)
    refresh(app, project)  # used grew by two objects between two real samples
    found = {row["project"]: row for row in admin.get("/api/v2/audit/usage/forecast").json["projects"]}[project]
    assert found["samples"] == 2 and found["used"]["growth_bytes_per_day"] > 0
    assert found["provisioned"]["reason"] == forecast.NOT_GROWING and found["used"]["full_at"] is not None
    labels = (("project", project),)
    with counting(cold_tokens=False) as counted:
        scraped = scrape(admin)
    assert scraped[("robin_project_quota_exhaustion_seconds", labels)] == pytest.approx(
        (datetime.fromisoformat(found["used"]["full_at"]) - utcnow()).total_seconds(), abs=120)
    assert not [statement for statement in counted.statements if "usage_samples" in statement]
    # Flat since: the next refresh's fit says never, and the series goes.
    with app.app_context(), db.unit_of_work() as session:
        session.execute(delete(ProjectUsageSample).where(ProjectUsageSample.project_id == project_id(app, project)))
    refresh(app, project)
    refresh(app, project)
    assert ("robin_project_quota_exhaustion_seconds", labels) not in scrape(admin)
