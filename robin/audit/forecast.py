"""When each project reaches its quota: the growth rate of its provisioned and used bytes, a least-squares line
through its usage history over a window (ROBIN_USAGE_FORECAST_DAYS), and the date each figure reaches the quota
from its latest sample at that rate.

The sums a fit needs are computed by the database, one grouped query for every project, so a forecast costs one
scan of the window's samples, not a row each in Python. After each sampling the forecasts are stored
(usage_forecasts) for the metrics scrape (robin_project_quota_exhaustion_seconds), which fits nothing itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, text

from robin import config
from robin.audit.models import ProjectUsageSample, UsageForecast, still_there
from robin.db import db, utcnow
from robin.projects.models import Project, Quota

FIGURES = ("provisioned", "used")
# Why a figure has no date: no sample in the window; one (no line through a point); flat or shrinking; or growing
# so slowly that it would take longer than FAR_FUTURE.
NO_SAMPLES, TOO_FEW_SAMPLES, NOT_GROWING, TOO_SLOW = "no_samples", "too_few_samples", "not_growing", "too_slow"
REASONS = (NO_SAMPLES, TOO_FEW_SAMPLES, NOT_GROWING, TOO_SLOW)
FAR_FUTURE = timedelta(days=100 * 365)
UNIX_EPOCH_JULIAN_DAY = 2440587.5


@dataclass(frozen=True)
class Sums:
    """A project's samples in the window, summed: x is seconds since the window's start, y a figure's bytes."""
    n: int
    x: float
    xx: float
    y: dict[str, float]
    xy: dict[str, float]

    def slope(self, figure: str) -> float | None:
        """Bytes per second of the least-squares line; None when the samples are fewer than two instants."""
        spread = self.n * self.xx - self.x * self.x
        if self.n < 2 or spread <= 0:
            return None
        return (self.n * self.xy[figure] - self.x * self.y[figure]) / spread


def _seconds_since(column, start: datetime):
    """The column's time as seconds after `start`, in SQL: small numbers, so that sums of their squares keep
    their precision in double precision on SQLite (PostgreSQL's are exact numerics)."""
    if db.is_sqlite:  # SQLite keeps times as text, which julianday() reads
        return (func.julianday(column) - UNIX_EPOCH_JULIAN_DAY) * 86400.0 - start.timestamp()
    return func.extract("epoch", column) - start.timestamp()


def _in_window(query, since: datetime, project_id: int | None):
    query = query.where(ProjectUsageSample.at >= since)
    return query if project_id is None else query.where(ProjectUsageSample.project_id == project_id)


def _sums(session, since: datetime, project_id: int | None) -> dict[int, Sums]:
    sample = ProjectUsageSample
    x = _seconds_since(sample.at, since)
    columns = {"provisioned": sample.provisioned_bytes, "used": sample.used_bytes}
    query = (select(sample.project_id, func.count(), func.sum(x), func.sum(x * x),
                    *(func.sum(column) for column in columns.values()),
                    *(func.sum(x * column) for column in columns.values()))
             .group_by(sample.project_id))
    query = _in_window(query, since, project_id)
    found = {}
    for pid, n, sx, sxx, *sy in session.execute(query):
        found[pid] = Sums(n, float(sx), float(sxx), dict(zip(FIGURES, map(float, sy[:2]), strict=True)),
                                 dict(zip(FIGURES, map(float, sy[2:]), strict=True)))
    return found


def _latest(session, since: datetime, project_id: int | None) -> dict[int, tuple]:
    """Each project's newest sample in the window: (at, provisioned bytes, used bytes)."""
    sample = ProjectUsageSample
    newest = _in_window(select(sample.project_id, func.max(sample.at).label("at")), since, project_id) \
        .group_by(sample.project_id).subquery()
    query = (select(sample.project_id, sample.at, sample.provisioned_bytes, sample.used_bytes)
             .join(newest, (sample.project_id == newest.c.project_id) & (sample.at == newest.c.at)))
    return {pid: (at, provisioned, used) for pid, at, provisioned, used in session.execute(query)}


def reach(latest: int, latest_at: datetime, quota: int, slope: float | None) -> tuple[datetime | None, str | None]:
    """When a figure at `latest` bytes at `latest_at`, growing `slope` bytes a second, reaches `quota`; or None and
    why not. A figure already at its quota reached it at `latest_at`."""
    if latest >= quota:
        return latest_at, None
    if slope is None:
        return None, TOO_FEW_SAMPLES
    if slope <= 0:
        return None, NOT_GROWING
    left = (quota - latest) / slope
    if left > FAR_FUTURE.total_seconds():
        return None, TOO_SLOW
    return latest_at + timedelta(seconds=left), None


def _figure(name: str, sums: Sums | None, latest: tuple | None, quota: int, now: datetime) -> dict:
    if latest is None:
        return {"bytes": None, "growth_bytes_per_day": None, "full_at": None, "seconds_left": None,
                "reason": NO_SAMPLES}
    at, value = latest[0], latest[1 + FIGURES.index(name)]
    slope = sums.slope(name)
    full_at, reason = reach(value, at, quota, slope)
    return {"bytes": value, "growth_bytes_per_day": None if slope is None else slope * 86400, "full_at": full_at,
            "seconds_left": None if full_at is None else max(0.0, (full_at - now).total_seconds()), "reason": reason}


def _soonest_first(forecast: dict) -> tuple:
    full_at = forecast["full_at"]
    return (full_at is None, full_at.timestamp() if full_at else 0.0, forecast["project"])


def compute(now: datetime, window: timedelta, project_id: int | None = None) -> list[dict]:
    """Every project's forecast (or only `project_id`'s) over the `window` before `now`, soonest first (those that
    never reach their quota last, by name)."""
    since = now - window
    projects = select(Project.id, Project.name, Quota.max_bytes).join(Quota)
    if project_id is not None:
        projects = projects.where(Project.id == project_id)
    with db.reading() as session:
        sums, latest = _sums(session, since, project_id), _latest(session, since, project_id)
        projects = session.execute(projects).all()
    forecasts = []
    for project_id, name, quota in projects:
        figures = {figure: _figure(figure, sums.get(project_id), latest.get(project_id), quota, now)
                   for figure in FIGURES}
        dates = [figures[figure]["full_at"] for figure in FIGURES if figures[figure]["full_at"] is not None]
        full_at = min(dates, default=None)
        forecasts.append({"project_id": project_id, "project": name, "quota_bytes": quota,
                          "samples": sums[project_id].n if project_id in sums else 0, **figures, "full_at": full_at,
                          "seconds_left": None if full_at is None else max(0.0, (full_at - now).total_seconds())})
    return sorted(forecasts, key=_soonest_first)


def report(window_days: int) -> dict:
    """GET /api/v2/audit/usage/forecast's body (the caller checked the token may see every project)."""
    now = utcnow()
    return {"generated_at": now, "window_days": window_days, "projects": compute(now, timedelta(days=window_days))}


def store(now: datetime) -> None:
    """Fit every project over the configured window and replace the stored forecasts in one transaction (a
    scrape reads one fit or the other, never a mix)."""
    rows = [{"project_id": forecast["project_id"], "provisioned_full_at": forecast["provisioned"]["full_at"],
             "used_full_at": forecast["used"]["full_at"], "computed_at": now}
            for forecast in compute(now, timedelta(days=config.current().usage_forecast_days))]
    with db.unit_of_work() as session:
        if not db.is_sqlite:  # two refreshes storing at once: the second waits, as volume_totals' passes do
            session.execute(text("LOCK TABLE usage_forecasts IN EXCLUSIVE MODE"))
        session.execute(delete(UsageForecast))
        rows = still_there(session, rows, "project_id", Project.id)
        if rows:
            session.execute(insert(UsageForecast), rows)


def stored_soonest(session) -> list[tuple[str, datetime]]:
    """(project, date) of the projects whose stored forecast reaches the quota, soonest first: what the
    dashboard lists, read from the last fit instead of fitting every project's window again."""
    names = dict(session.execute(select(Project.id, Project.name)).all())
    dates = stored_full_at(session.connection())
    return sorted(((names[pid], at) for pid, at in dates.items() if pid in names), key=lambda row: (row[1], row[0]))


def stored_full_at(connection) -> dict[int, datetime]:
    """The scrape's read: per project, the sooner of the stored dates at which provisioned or used bytes reach
    the quota (projects that never do at the current rate are left out)."""
    found = {}
    for project_id, *dates in connection.execute(select(UsageForecast.project_id, UsageForecast.provisioned_full_at,
                                                        UsageForecast.used_full_at)):
        known = [date for date in dates if date is not None]
        if known:
            found[project_id] = min(known)
    return found
