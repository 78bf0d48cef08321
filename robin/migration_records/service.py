"""The record of migrations into a project's volumes (see MigrationRecord)."""
from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from robin.auth.identity import Identity
from robin.db import db, utcnow
from robin.errors import Conflict
from robin.migration_records.models import MigrationRecord
from robin.pagination import Page, paginate
from robin.projects import service as projects


def _record_id() -> str:
    return f"{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def _view(record: MigrationRecord, project: str) -> dict:
    return {"id": record.id, "project": project, "at": record.at, "actor": record.actor, "source": record.source,
            "volume_kind": record.volume_kind, "volume_name": record.volume_name, "status": record.status,
            "run": record.run, "report": record.report}


def record(identity: Identity, project: str, body: dict) -> dict:
    identity.require_write(project)
    body = dict(body)
    replaces = body.pop("replaces", None)
    starts = body["status"] == "started"
    with db.unit_of_work() as session:
        # A start is a compare-and-set on the destination's latest record: the project row, locked, serializes it.
        owner = projects.lock(session, project) if starts else projects.find(session, project)
        if starts:
            _refuse_if_held(session, owner.id, body, replaces)
        entry = MigrationRecord(id=_record_id(), project_id=owner.id, at=utcnow(), actor=identity.actor, **body)
        session.add(entry)
        session.flush()
        return _view(entry, project)


def _refuse_if_held(session: Session, project_id: int, body: dict, replaces: str | None) -> None:
    """Another run holds the destination while its `started` record is the latest one: two runs copying into one
    volume (from two hosts) would remove each other's files and corrupt an RBD file system."""
    latest = session.scalar(select(MigrationRecord).where(
        MigrationRecord.project_id == project_id, MigrationRecord.volume_kind == body["volume_kind"],
        MigrationRecord.volume_name == body["volume_name"]).order_by(MigrationRecord.id.desc()).limit(1))
    if latest is None or latest.status != "started" or latest.run is None or latest.run in (body["run"], replaces):
        return
    raise Conflict(f"run {latest.run} of the migration ({latest.actor}, started {latest.at.isoformat()}) holds "
                   f"{body['volume_kind']} volume {body['volume_name']!r} until it records its result: wait for it, "
                   f"or, if it died, start again naming it in `replaces`", code="migration_running",
                   details={"run": latest.run, "source": latest.source, "report": latest.report})


def history(identity: Identity, project: str, args: dict) -> Page:
    identity.require_read(project)
    with db.reading() as session:
        owner = projects.find(session, project)
        query = select(MigrationRecord).where(MigrationRecord.project_id == owner.id)
        for column in ("volume_kind", "volume_name"):
            if args.get(column):
                query = query.where(getattr(MigrationRecord, column) == args[column])
        page = paginate(session, query, MigrationRecord.id, args["limit"], args["cursor"])
        return Page([_view(entry, project) for entry in page.items], page.next_cursor)
