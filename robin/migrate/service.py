"""The record of migrations into a project's volumes (see MigrationRecord)."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from robin.auth.identity import Identity
from robin.db import db, utcnow
from robin.migrate.models import MigrationRecord
from robin.pagination import Page, paginate
from robin.projects import service as projects


def _record_id() -> str:
    return f"{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def _view(record: MigrationRecord, project: str) -> dict:
    return {"id": record.id, "project": project, "at": record.at, "actor": record.actor, "source": record.source,
            "volume_kind": record.volume_kind, "volume_name": record.volume_name, "status": record.status,
            "report": record.report}


def record(identity: Identity, project: str, body: dict) -> dict:
    identity.require_write(project)
    with db.unit_of_work() as session:
        owner = projects.find(session, project)
        entry = MigrationRecord(id=_record_id(), project_id=owner.id, at=utcnow(), actor=identity.actor, **body)
        session.add(entry)
        session.flush()
        return _view(entry, project)


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
