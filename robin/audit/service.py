"""Audit events: exactly one row for every mutating request (and for the reads that start work).

The row travels with the change it records: the first write transaction a request commits carries the
request's row (outcome `pending`), so no change commits without it. Its final status, outcome and error code
are written in the commit that decides them when a service says which one does (`success_commits_next`: the
state machine's second commit, once the Ceph call succeeded), as the success status the view declares; after
the response they are written, or corrected, only when the response says otherwise (or nothing wrote them),
in a small transaction of its own. A request that committed nothing (refused, invalid, failed before its first
commit) gets its row after the response, in a transaction of its own. A row still `pending` (status 0) is a
change whose worker died before its outcome was decided.

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

from flask import Flask, Response, current_app, g, has_request_context, request
from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.exc import SQLAlchemyError

from robin.audit.models import AuditEvent
from robin.db import Direct, Pipelined, db, utcnow
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

# Built once: an INSERT given its row as parameters, not as values, costs no statement-building per request.
_INSERT = insert(AuditEvent)
_FINAL_VALUES = dict(actor=bindparam("final_actor"), outcome=bindparam("final_outcome"),
                    status_code=bindparam("final_status"), error_code=bindparam("final_error_code"))
_FINISH = (update(AuditEvent).where(AuditEvent.id == bindparam("row_id"), AuditEvent.outcome == PENDING)
           .values(**_FINAL_VALUES))
# The response disagreed with the status written with the change (it failed after the decisive commit).
_CORRECT = (update(AuditEvent).where(AuditEvent.id == bindparam("row_id"),
                                     AuditEvent.status_code == bindparam("written_status"))
            .values(**_FINAL_VALUES))


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


def success_commits_next() -> None:
    """The request's next write commit decides its success (the state machine's second commit after a Ceph call
    that succeeded): its audit row gets its final status in that commit, not in a transaction of its own after
    the response. Outside an audited request, nothing."""
    if _audited():
        g.audit_success_next = True


@contextmanager
def _with_the_change(connection: Connection | Pipelined | Direct) -> Iterator[None]:
    """Around the commit of a write transaction: the first one an audited request commits carries its row, the
    one a service said decides its success (success_commits_next) the row's final status. `g.audit_row` is set
    once the row is taken care of: the id of the committed pending row (or None); `g.audit_written` once a final
    status has committed: (status, outcome, error code)."""
    if not _audited():
        yield
        return
    if "audit_row" in g:
        written = _write_success(connection) if g.pop("audit_success_next", False) else None
        yield
        if written is not None:
            g.audit_written = written
        return
    try:
        inserted = connection.execute(_INSERT, _event(PENDING, status_code=0, error_code=None))
    except SQLAlchemyError as exc:
        log.exception("could not write audit event; the change is refused", extra={"target": request.path})
        raise ServiceUnavailable("the audit trail cannot be written, so nothing was changed; see robin's log",
                                 code="audit_unavailable") from exc
    yield
    g.audit_row = inserted.inserted_primary_key[0]


def _write_success(connection: Connection | Pipelined | Direct) -> tuple[int, str, None] | None:
    """The final status of the request's committed row, written in the caller's transaction: the success status
    the view declares. None (nothing written) without a row or a single declared success status."""
    row_id, status = g.get("audit_row"), _declared_success_status()
    if row_id is None or status is None:
        return None
    connection.execute(_FINISH, _final(row_id, status, "success", None))
    return status, "success", None


def _declared_success_status() -> int | None:
    """The one success status the request's view declares (flask-smorest's `response` decorator)."""
    view = current_app.view_functions.get(request.endpoint)
    method = getattr(getattr(view, "view_class", None), request.method.lower(), view)
    codes = getattr(method, "_apidoc", {}).get("success_status_codes", [])
    return int(codes[0]) if len(codes) == 1 else None


def _final(row_id: int, status: int, outcome: str, error_code: str | None) -> dict:
    identity = g.get("identity")
    return {"row_id": row_id, "final_outcome": outcome, "final_status": status, "final_error_code": error_code,
            "final_actor": identity.actor if identity else "anonymous"}


def record(response: Response) -> None:
    """The request's final status: on the row its change committed with, or on a row of its own; nothing when the
    decisive commit wrote it already and the response agrees."""
    row_id = g.get("audit_row")
    g.audit_row = row_id  # this transaction must not carry a second row
    g.pop("audit_success_next", None)
    outcome = "success" if response.status_code < 400 else "failure"
    error_code = _error_code(response)
    written = g.get("audit_written")
    if written == (response.status_code, outcome, error_code):
        return
    try:
        with db.writing() as connection:
            if row_id is None:
                connection.execute(_INSERT, [_event(outcome, response.status_code, error_code)])
            elif written is None:
                connection.execute(_FINISH, _final(row_id, response.status_code, outcome, error_code))
            else:
                connection.execute(_CORRECT, {**_final(row_id, response.status_code, outcome, error_code),
                                              "written_status": written[0]})
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
