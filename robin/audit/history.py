"""Usage history: how each project's and pool's usage changed over time.

Each usage refresh appends a sample per project (provisioned, used and quota bytes, volumes) and per pool or CephFS
file system, summed from the rows and the usage table as the metrics' totals are (robin.audit.usage), in one
multi-row insert. The maintenance loop keeps the history small: raw samples older than ROBIN_USAGE_HISTORY_RAW_DAYS
become hourly means, hourly means older than ROBIN_USAGE_HISTORY_HOURLY_DAYS daily means, and daily means older
than ROBIN_USAGE_HISTORY_DAILY_DAYS go. A mean is stored at the start of its hour or day.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from robin import config
from robin.audit import forecast
from robin.audit.models import CHUNK, PoolUsageSample, ProjectUsageSample, still_there
from robin.auth.identity import Identity
from robin.clusters.models import CephCluster
from robin.db import db, utcnow
from robin.projects import service as projects
from robin.projects.models import Project, Quota

RAW, HOUR, DAY = 0, 3600, 86400  # a sample's step: raw, or the mean of an hour's or a day's
SAMPLE_MODELS = (ProjectUsageSample, PoolUsageSample)


# --- sampling -------------------------------------------------------------------------------------

def newest_sample_at(session) -> datetime | None:
    return session.scalar(select(func.max(ProjectUsageSample.at)).where(ProjectUsageSample.step == RAW))


def record(min_spacing: timedelta = timedelta(0)) -> int:
    """Append one raw sample of every project and every pool, unless the newest is younger than `min_spacing` (the
    maintenance loop's refreshes run every round, most of them measuring a few volumes: one sample per
    usage.MAX_AGE is history enough). Then fit the forecasts the metrics scrape reads. Returns the rows appended."""
    from robin.audit import usage  # whose refresh calls this

    at = utcnow()
    with db.reading() as session:
        newest = newest_sample_at(session)
        if min_spacing and newest is not None and at - newest < min_spacing:
            return 0
        totals = usage.sum_totals(session)
        quotas = session.execute(select(Quota.project_id, Quota.max_bytes)).all()
    projects = {project_id: {"project_id": project_id, "step": RAW, "at": at, "provisioned_bytes": 0,
                             "used_bytes": 0, "quota_bytes": max_bytes, "volumes": 0}
                for project_id, max_bytes in quotas}
    pools = {}
    for project_id, cluster_id, kind, location, provisioned, used, volumes in totals:
        pool = pools.setdefault((cluster_id, kind, location), {
            "cluster_id": cluster_id, "kind": kind, "location": location, "step": RAW, "at": at,
            "provisioned_bytes": 0, "used_bytes": 0, "volumes": 0})
        for row in (projects.get(project_id), pool):  # None: a project deleted since the sum
            if row is not None:
                row["provisioned_bytes"] += provisioned
                row["used_bytes"] += used
                row["volumes"] += volumes
    with db.unit_of_work() as session:
        _insert_new(session, ProjectUsageSample, still_there(session, projects.values(), "project_id", Project.id))
        _insert_new(session, PoolUsageSample, still_there(session, pools.values(), "cluster_id", CephCluster.id))
    forecast.store(at)
    return len(projects) + len(pools)


def _insert_new(session, model, rows: list[dict]) -> None:
    """Insert the rows, leaving out those whose key exists: two replicas' refreshes may sample at the same
    microsecond, and a mean already stored for an hour or a day stands."""
    dialect = sqlite if db.is_sqlite else postgresql
    per_chunk = CHUNK * 4 // len(model.__table__.columns)  # CHUNK rows of 4 parameters fit
    for start in range(0, len(rows), per_chunk):
        session.execute(dialect.insert(model).values(rows[start:start + per_chunk]).on_conflict_do_nothing())


# --- downsampling ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Retention:
    raw: timedelta
    hourly: timedelta
    daily: timedelta

    @classmethod
    def configured(cls) -> Retention:
        settings = config.current()
        return cls(timedelta(days=settings.usage_history_raw_days), timedelta(days=settings.usage_history_hourly_days),
                   timedelta(days=settings.usage_history_daily_days))


def floor(at: datetime, step: int) -> datetime:
    """The start of the `step`-second bucket (counted from the Unix epoch) that `at` falls in."""
    return datetime.fromtimestamp(math.floor(at.timestamp() / step) * step, UTC)


def downsample(now: datetime | None = None, retention: Retention | None = None) -> dict:
    """The maintenance loop's pass: fold raw samples past their retention into hourly means, hourly means into
    daily ones, and drop daily means past theirs. Only whole hours and days are folded. Each day's worth is one
    transaction that holds the table's write lock, so two replicas doing this at once fold every sample once, and
    a crash leaves whole days folded or not. Returns the samples folded and dropped."""
    now, retention = now or utcnow(), retention or Retention.configured()
    done = {"history_folded": 0, "history_dropped": 0}
    for model in SAMPLE_MODELS:
        done["history_folded"] += _fold(model, RAW, HOUR, floor(now - retention.raw, HOUR))
        done["history_folded"] += _fold(model, HOUR, DAY, floor(now - retention.hourly, DAY))
        with db.unit_of_work() as session:
            dropped = session.execute(delete(model).where(model.step == DAY, model.at < now - retention.daily))
            done["history_dropped"] += dropped.rowcount
    return done


def _lock(session, model) -> None:
    """On PostgreSQL, one folding pass at a time (SQLite's units of work take its one write lock anyway); plain
    reads and the samples' inserts wait for the pass's short transaction at most."""
    if not db.is_sqlite:
        session.execute(text(f"LOCK TABLE {model.__tablename__} IN EXCLUSIVE MODE"))


def _fold(model, step: int, into: int, before: datetime) -> int:
    """Replace the `step` samples older than `before` with their means per `into` bucket, a day at a time."""
    folded = 0
    while True:
        with db.unit_of_work() as session:
            _lock(session, model)
            oldest = session.scalar(select(func.min(model.at)).where(model.step == step, model.at < before))
            if oldest is None:
                return folded
            until = min(floor(oldest, DAY) + timedelta(days=1), before)
            columns = [getattr(model, name) for name in (*model.SERIES, "at", *model.MEANS, *model.LASTS)]
            rows = session.execute(select(*columns).where(model.step == step, model.at < until)
                                   .order_by(*columns[:len(model.SERIES) + 1])).all()
            _insert_new(session, model, _means(model, rows, into))
            session.execute(delete(model).where(model.step == step, model.at < until))
            folded += len(rows)


def _means(model, rows, step: int) -> list[dict]:
    """Rows (series..., at, means..., lasts...), in time order per series, as one row per series and bucket: the
    mean of each figure in MEANS, the bucket's last value of each in LASTS."""
    series_width = len(model.SERIES)
    buckets = defaultdict(list)
    for row in rows:
        buckets[(*row[:series_width], floor(row[series_width], step))].append(row)
    means = []
    for key, members in buckets.items():
        figures = [row[series_width + 1:] for row in members]
        mean = {name: round(sum(f[i] for f in figures) / len(figures)) for i, name in enumerate(model.MEANS)}
        last = dict(zip(model.LASTS, figures[-1][len(model.MEANS):], strict=True))
        means.append({**dict(zip(model.SERIES, key, strict=False)), "step": step, "at": key[-1], **mean, **last})
    return means


# --- reading --------------------------------------------------------------------------------------

DEFAULT_RANGE = timedelta(days=7)
AUTO_POINTS = 500  # points a series has at most when no step is asked for
MAX_POINTS = 10_000  # a range over a step may make at most this many
MIN_STEP = 60


def auto_step(since: datetime, until: datetime, points: int = AUTO_POINTS) -> int:
    """The shortest step, in whole minutes, that cuts the range into at most `points` buckets."""
    seconds = math.ceil((until - since).total_seconds() / points)
    return max(MIN_STEP, math.ceil(seconds / MIN_STEP) * MIN_STEP)


def project_points(project_id: int, since: datetime, until: datetime, step: int) -> list[dict]:
    """The project's samples at or after `since` and before `until`, whatever their step, averaged per `step`
    seconds (the buckets counted from the Unix epoch; a bucket with no sample has no point)."""
    sample = ProjectUsageSample
    columns = [getattr(sample, name) for name in ("project_id", "at", *sample.MEANS, *sample.LASTS)]
    with db.reading() as session:
        rows = session.execute(select(*columns).where(sample.project_id == project_id, sample.at >= since,
                                                      sample.at < until).order_by(sample.at)).all()
    counts = defaultdict(int)
    for row in rows:
        counts[floor(row.at, step)] += 1
    return [{**point, "samples": counts[point["at"]]} for point in _means(sample, rows, step)]


def project_history(identity: Identity, project: str, since: datetime, until: datetime, step: int) -> dict:
    """GET /api/v2/projects/{p}/usage/history's body: members of the project, auditors and admins."""
    identity.require_read(project)
    with db.reading() as session:
        project_id = projects.find(session, project).id
    retention = Retention.configured()
    return {"project": project, "since": since, "until": until, "step_seconds": step,
            "retention_days": {"raw": retention.raw.days, "hourly": retention.hourly.days,
                               "daily": retention.daily.days},
            "points": project_points(project_id, since, until, step)}
