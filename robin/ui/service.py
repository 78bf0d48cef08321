"""What the dashboard shows, read through robin's usage, drift and audit services."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from robin import config
from robin.audit import drift as drift_service
from robin.audit import forecast, history, usage
from robin.audit.models import AuditEvent
from robin.auth.identity import Identity
from robin.auth.models import Role
from robin.db import db, utcnow
from robin.projects.models import Project
from robin.ui.charts import line_chart
from robin.units import human_bytes

TOP_CONSUMERS = 10
CLOSEST_TO_QUOTA = 10
# The project page's ranges, in days; a week unless asked.
HISTORY_DAYS = (1, 7, 30, 90, 730)
DEFAULT_HISTORY_DAYS = 7
RECENT_EVENTS = 50
# The usage report is for auditors; a member's page reads it as this and keeps only its own project.
_READER = Identity(name="robin-ui", role=Role.AUDITOR)


def _with_bars(project: dict) -> dict:
    """Widths in percent of the row's largest figure, so the three bars compare at a glance."""
    figures = {"quota": project["quota_bytes"], "provisioned": project["provisioned_bytes"],
               "used": project["used_bytes"]}
    scale = max(max(figures.values()), 1)
    return {**project, "bars": [{"name": name, "bytes": value, "width": round(100 * value / scale, 1)}
                                for name, value in figures.items()]}


def overview(identity: Identity) -> dict:
    """Projects with their bars, the top consumers and the recent audit events this identity may see."""
    report = usage.report(_READER, top=10**9)
    visible = identity.can_read
    projects = [_with_bars(project) for project in report["projects"] if visible(project["project"])]
    consumers = [row for row in report["top_consumers"] if visible(row["project"])][:TOP_CONSUMERS]
    return {"projects": projects, "top_consumers": consumers, "events": recent_events(identity),
            "closest_to_quota": closest_to_quota(projects, report["generated_at"]),
            "generated_at": report["generated_at"]}


def closest_to_quota(projects: list[dict], now: datetime) -> list[dict]:
    """Of these projects (the usage report's rows), those that reach their quota at their current growth rate,
    soonest first, with the date: from the forecasts the last usage sampling stored, so that the page does not
    fit every project's history again (seconds at a thousand projects)."""
    with db.reading() as session:
        soonest = forecast.stored_soonest(session)
    rows = {project["project"]: project for project in projects}
    return [{**rows[name], "full_at": full_at, "days_left": max(0.0, (full_at - now).total_seconds()) / 86400}
            for name, full_at in soonest if name in rows][:CLOSEST_TO_QUOTA]


def project_page(identity: Identity, project: str, days: int) -> dict:
    """A project's usage history over the last `days` as charts, and its forecast; a project this identity may
    not read is refused as the API refuses it."""
    until = utcnow()
    since = until - timedelta(days=days)
    step = history.auto_step(since, until)
    body = history.project_history(identity, project, since, until, step)
    points = body["points"]
    charts = [line_chart("bytes", "Bytes", points, [("quota_bytes", "quota"), ("provisioned_bytes", "provisioned"),
                                                     ("used_bytes", "used")], since, until, step, human_bytes,
                         unit=1024),
              line_chart("volumes", "Volumes", points, [("volumes", "volumes")], since, until, step, str)]
    with db.reading() as session:
        project_id = session.scalar(select(Project.id).where(Project.name == project))
    window = timedelta(days=config.current().usage_forecast_days)
    mine = forecast.compute(until, window, project_id)[0] if project_id is not None else None  # None: deleted
    return {"project": project, "days": days, "step": step, "points": len(points), "charts": charts,
            "forecast": mine, "forecast_days": config.current().usage_forecast_days,
            "retention": body["retention_days"]}


def recent_events(identity: Identity, limit: int = RECENT_EVENTS) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if not identity.sees_all_projects:
        query = query.where(AuditEvent.project == identity.project)
    with db.reading() as session:
        return list(session.scalars(query))


def drift(identity: Identity) -> dict | None:
    """The drift report for auditors and admins; None for a member (drift is theirs to see)."""
    if not identity.sees_all_projects:
        return None
    return drift_service.report_for(identity, drift_service.DEFAULT_OLDER_THAN)
