"""The audit trail, read: the events of `GET /api/v2/audit/events` and of the dashboard's audit page.

Who sees what: admins and auditors every event; a member the events of its own project only (an event belongs
to the project its request's path named: cluster registrations, logins and Wayne's /v1 calls name none, so only
admins and auditors see them). A filter naming another project is refused (403), as every listing refuses it.

Newest first, in the order the rows were written (by id: `at` may tie, and two replicas' clocks differ); the
cursor is the id of a page's last event, so a page costs one indexed query at any depth.
"""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import ColumnElement, Select, Text, and_, bindparam, cast, func, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from robin.audit.models import AuditEvent
from robin.auth.identity import Identity
from robin.db import db
from robin.errors import BadRequest, NotFound
from robin.pagination import Page, decode_cursor, encode_cursor
from robin.projects.models import Project
from robin.snapshots.models import Snapshot
from robin.volumes.models import VOLUME_MODELS
from robin.volumes.service import only_project

OUTCOMES = ("success", "failure", "pending")
ID_MAX = 2**31 - 1  # audit_events.id is an INTEGER
# How robin writes a volume's or snapshot's id (robin.volumes.models, robin.snapshots.models).
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
COLUMNS = (AuditEvent.id, AuditEvent.at, AuditEvent.actor, AuditEvent.action, AuditEvent.target,
           AuditEvent.project, AuditEvent.outcome, AuditEvent.status_code, AuditEvent.error_code,
           AuditEvent.request_id, AuditEvent.details)
# The expressions migration 0018 indexes on PostgreSQL, through its functions: the segments of the request's path,
# and the name a create's body gave (each cut at 128 characters, the longest name).
PATH_SEGMENTS = func.robin_audit_path_segments(AuditEvent.target, type_=postgresql.ARRAY(Text))
CREATED_NAME = func.robin_audit_created_name(AuditEvent.details, type_=Text)
WHOLE_SEGMENTS = func.string_to_array(AuditEvent.target, "/", type_=postgresql.ARRAY(Text))


def page(identity: Identity, filters: dict, limit: int, cursor: str | None) -> Page:
    """A page of the events this identity sees that match `filters` (project, actor, action, outcome, target,
    since, until; each optional), newest first; items in their wire form."""
    project = filters.get("project") or only_project(identity, "audit events")
    if project is not None:
        identity.require_read(project)
    query = select(*COLUMNS)
    if project is not None:
        query = query.where(AuditEvent.project == project)
    for column in ("actor", "action", "outcome"):
        if filters.get(column):
            query = query.where(getattr(AuditEvent, column) == filters[column])
    query = _in_time(query, filters.get("since"), filters.get("until"))
    if cursor:
        query = query.where(AuditEvent.id < _after(cursor))
    with db.reading() as session:
        if filters.get("target"):
            query = query.where(_target(session, identity, filters["target"]))
        rows = [_item(row._mapping) for row in session.execute(query.order_by(AuditEvent.id.desc()).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor([rows[-1]["id"]]) if more else None)


def _after(cursor: str) -> int:
    """The id a cursor holds: one an id column can hold (a larger one was not made by the API)."""
    after = decode_cursor(cursor, (int,))[0]
    if not 0 < after <= ID_MAX:
        raise BadRequest("the cursor is not one this API returned; start again without it", code="invalid_cursor")
    return after


def _in_time(query: Select, since: datetime | None, until: datetime | None) -> Select:
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    return query


def _item(row) -> dict:
    """An event as AuditEventSchema writes it."""
    return {**row, "at": row["at"].isoformat()}


def _target(session: Session, identity: Identity, target: str) -> ColumnElement[bool]:
    """A name matches the events whose path names it (the volume, its snapshots, a restore, a delete) and the
    creates whose body named it; an id, the events of the volume or snapshot that has it, in its project."""
    if not UUID.match(target):
        return _naming(target)
    name, project = _volume_or_snapshot(session, target)
    if project is None or not identity.can_read(project):  # another tenant's id is as unknown as none
        raise NotFound(f"no volume or snapshot this token sees has the id {target!r}", code="target_not_found",
                       details={"target": target})
    return and_(_naming(name), AuditEvent.project == project)


def _naming(name: str) -> ColumnElement[bool]:
    wanted = bindparam("target_name", name, type_=Text)
    if db.is_sqlite:  # no index on SQLite: a scan of a small database
        return or_(func.instr("/" + AuditEvent.target + "/", "/" + wanted + "/") > 0,
                   func.json_extract(AuditEvent.details, "$.request.name") == wanted)
    # text[] @> text[]: psycopg sends the name as a varchar, whose array the operator does not take.
    segment = postgresql.array([cast(wanted, postgresql.TEXT)])
    # The index finds the rows by the cut segments; the whole ones decide (a longer segment is no name).
    in_path = and_(PATH_SEGMENTS.contains(segment), WHOLE_SEGMENTS.contains(segment))
    # No such check of a create's name: reading a body's name may fail (a NUL), which the function cannot; a body
    # naming more than 128 characters was refused anyway.
    return or_(in_path, CREATED_NAME == wanted)


def _volume_or_snapshot(session: Session, object_id: str) -> tuple[str | None, str | None]:
    """The name and project of the volume (either kind) or snapshot with this id; (None, None) when none has."""
    for model in (*VOLUME_MODELS, Snapshot):
        found = session.execute(select(model.name, Project.name).join(Project, Project.id == model.project_id)
                                .where(model.id == object_id)).first()
        if found is not None:
            return found[0], found[1]
    return None, None
