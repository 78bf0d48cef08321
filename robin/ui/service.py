"""What the dashboard shows, read through robin's usage, drift and audit services."""
from __future__ import annotations

from sqlalchemy import select

from robin.audit import drift as drift_service
from robin.audit import usage
from robin.audit.models import AuditEvent
from robin.auth.identity import Identity
from robin.auth.models import Role
from robin.db import db

TOP_CONSUMERS = 10
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
            "generated_at": report["generated_at"]}


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
