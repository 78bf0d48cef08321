"""Audit events: exactly one row for every mutating request (and for the reads that start work).

The row travels with the change it records: the first write transaction a request commits carries the
request's row (outcome `pending`), so no change commits without it; after the response, that row gets the
final status, outcome and error code. A request that committed nothing (refused, invalid, failed before
its first commit) gets its row after the response, in a transaction of its own. A row still `pending`
(status 0) is a change whose worker died before it answered.

The request body is kept redacted and bounded, whatever a client sends.
"""
from __future__ import annotations

import json
import logging
import math
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

from flask import Flask, Response, g, has_request_context, request
from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.exc import SQLAlchemyError

from robin.audit.models import AuditEvent
from robin.db import db, utcnow
from robin.errors import RequestTooLarge, ServiceUnavailable

log = logging.getLogger(__name__)
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PENDING = "pending"

# Field names that carry secrets, in any case and at any depth: cephx keys and keyrings, passwords, tokens.
SECRET_FIELD = re.compile(r"key|passw|pwd|passphrase|token|secret|credential|authorization|cookie", re.IGNORECASE)
REDACTED = "<redacted>"
# What an audit row keeps of a body: enough to read what was asked, never what fills a table.
MAX_DEPTH = 8
MAX_ITEMS = 64  # fields of one object, items of one array
MAX_STRING = 256  # characters of one string
MAX_JSON_CHARS = 8192  # of the whole copy, as stored
PROJECT_LENGTH = AuditEvent.__table__.c.project.type.length

_FINISH = (update(AuditEvent).where(AuditEvent.id == bindparam("row_id"), AuditEvent.outcome == PENDING)
           .values(actor=bindparam("final_actor"), outcome=bindparam("final_outcome"),
                   status_code=bindparam("final_status"), error_code=bindparam("final_error_code")))


def redacted(body) -> tuple[object, bool]:
    """A copy of a JSON document fit for an audit row, and whether anything was cut."""
    redaction = _Redaction()
    return redaction.copy(body), redaction.cut


class _Redaction:
    """Breadth first from a queue, not recursion (a body nested thousands deep cannot exhaust the stack), in
    a fixed budget of stored characters (the top of a document is kept before its depths). Secret-bearing
    fields are replaced; what is cut is marked where it was: too deep, too many items, too long a string."""

    def __init__(self) -> None:
        self.queue: deque = deque()
        self.budget = MAX_JSON_CHARS
        self.cut = False

    def copy(self, body):
        holder: list = []
        self.queue.append((holder, None, body, 0))
        while self.queue:
            parent, name, value, depth = self.queue.popleft()
            node = self._node(value, depth)
            # Containers cost their name here; their contents pay for themselves.
            cost = len(json.dumps(name)) + len(json.dumps(node if not isinstance(node, dict | list) else None))
            if cost > self.budget:
                self.cut = True
                break
            self.budget -= cost
            if isinstance(parent, dict):
                parent[name] = node
            else:
                parent.append(node)
        return holder[0] if holder else self._truncated("larger than an audit row holds")

    def _node(self, value, depth: int):
        """This node's copy; an object's or array's children are queued to fill it."""
        if isinstance(value, str):
            return value if len(value) <= MAX_STRING else value[:MAX_STRING] + self._truncated(f"{len(value)} chars")
        if isinstance(value, int) and abs(value) >= 2**63:
            return self._truncated("an integer wider than 64 bits")
        if isinstance(value, float) and not math.isfinite(value):
            return f"<not JSON: {value}>"  # Python reads NaN and Infinity; PostgreSQL's json refuses them
        if not isinstance(value, dict | list):
            return value
        if depth >= MAX_DEPTH:
            return self._truncated(f"nested deeper than {MAX_DEPTH}")
        container = {} if isinstance(value, dict) else []
        items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
        for key, item in islice(items, MAX_ITEMS):
            secret = key is not None and SECRET_FIELD.search(key)
            self.queue.append((container, self._name(key), REDACTED if secret else item, depth + 1))
        if len(value) > MAX_ITEMS:
            marker = self._truncated(f"{len(value) - MAX_ITEMS} more")
            self.queue.append((container, "<truncated>" if isinstance(value, dict) else None, marker, depth + 1))
        return container

    def _name(self, key: str | None) -> str | None:
        if key is None or len(key) <= MAX_STRING:
            return key
        return key[:MAX_STRING] + self._truncated(f"{len(key)} chars")

    def _truncated(self, what: str) -> str:
        self.cut = True
        return f"<truncated: {what}>"


def audit_this_read() -> None:
    """Audit this GET too: one that starts work (Wayne's client starts a verification with a GET)."""
    g.audit_read = True


def _audited() -> bool:
    return has_request_context() and (request.method in MUTATING_METHODS or g.get("audit_read", False))


@contextmanager
def _with_the_change(connection: Connection) -> Iterator[None]:
    """Around the commit of a write transaction: the first one an audited request commits carries its row.
    `g.audit_row` is set once the row is taken care of: the id of the committed pending row (or None)."""
    if not _audited() or "audit_row" in g:
        yield
        return
    try:
        inserted = connection.execute(insert(AuditEvent).values(_event(PENDING, status_code=0, error_code=None)))
    except SQLAlchemyError as exc:
        log.exception("could not write audit event; the change is refused", extra={"target": request.path})
        raise ServiceUnavailable("the audit trail cannot be written, so nothing was changed; see robin's log",
                                 code="audit_unavailable") from exc
    yield
    g.audit_row = inserted.inserted_primary_key[0]


def record(response: Response) -> None:
    """The request's final status: on the row its change committed with, or on a row of its own."""
    row_id = g.get("audit_row")
    g.audit_row = row_id  # this transaction must not carry a second row
    outcome = "success" if response.status_code < 400 else "failure"
    error_code = _error_code(response)
    identity = g.get("identity")
    try:
        with db.writing() as connection:
            if row_id is None:
                connection.execute(insert(AuditEvent), [_event(outcome, response.status_code, error_code)])
            else:
                connection.execute(_FINISH, {"row_id": row_id, "final_outcome": outcome,
                                             "final_status": response.status_code, "final_error_code": error_code,
                                             "final_actor": identity.actor if identity else "anonymous"})
    except SQLAlchemyError:
        # The answer is decided; losing its final status must not turn it into an error.
        log.exception("could not write audit event", extra={"target": request.path, "status": response.status_code})


def _event(outcome: str, status_code: int, error_code: str | None) -> dict:
    identity = g.get("identity")
    project = (request.view_args or {}).get("project")
    return dict(
        at=utcnow(),
        actor=identity.actor if identity else "anonymous",
        action=f"{request.method} {request.url_rule.rule if request.url_rule else '<unmatched>'}",
        target=request.path,
        # A name longer than any project's names none (the target keeps the whole path).
        project=project if project is not None and len(project) <= PROJECT_LENGTH else None,
        outcome=outcome,
        status_code=status_code,
        error_code=error_code,
        request_id=g.get("request_id", ""),
        details=_details(read_body=status_code != RequestTooLarge.status),
    )


def _details(read_body: bool) -> dict:
    if not (read_body and request.is_json):
        return {}
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the JSON parser goes
        return {"request": "<truncated: nested too deep to parse>", "truncated": True}
    copy, cut = redacted(body)
    return {"request": copy, "truncated": True} if cut else {"request": copy}


def _error_code(response: Response) -> str | None:
    if response.status_code < 400 or not response.is_json:
        return None
    error = (response.get_json(silent=True) or {}).get("error") or {}
    return error.get("code")


def install(app: Flask) -> None:
    db.around_write_commit = _with_the_change

    @app.after_request
    def _audit(response: Response) -> Response:
        if _audited():
            record(response)
        return response
