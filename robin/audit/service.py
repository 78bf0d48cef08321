"""Audit events for every mutating request: written after the response is known, in a
transaction of their own, so failed requests (whose own transaction rolled back) are recorded too."""
from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from robin.audit.models import AuditEvent
from robin.db import db, utcnow

log = logging.getLogger(__name__)
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REDACTED_KEYS = frozenset({"password", "token", "secret"})


def _redact(body):
    if isinstance(body, dict):
        return {key: "<redacted>" if key.lower() in REDACTED_KEYS else _redact(value) for key, value in body.items()}
    return body


def _error_code(response: Response) -> str | None:
    if response.status_code < 400 or not response.is_json:
        return None
    error = (response.get_json(silent=True) or {}).get("error") or {}
    return error.get("code")


def record(response: Response) -> None:
    identity = g.get("identity")
    rule = request.url_rule.rule if request.url_rule else request.path
    event = dict(
        at=utcnow(),
        actor=identity.actor if identity else "anonymous",
        action=f"{request.method} {rule}",
        target=request.path,
        project=(request.view_args or {}).get("project"),
        outcome="success" if response.status_code < 400 else "failure",
        status_code=response.status_code,
        error_code=_error_code(response),
        request_id=g.get("request_id", ""),
        details={"request": _redact(request.get_json(silent=True))} if request.is_json else {},
    )
    try:
        with db.writing() as connection:
            connection.execute(insert(AuditEvent.__table__), [event])
    except SQLAlchemyError:
        # The change itself is done; losing its audit row must not turn success into an error.
        log.exception("could not write audit event", extra={"action": event["action"], "target": event["target"]})


def audit_this_read() -> None:
    """Audit this GET too: one that starts work (Wayne's client starts a verification with a GET)."""
    g.audit_read = True


def install(app: Flask) -> None:
    @app.after_request
    def _audit(response: Response) -> Response:
        if request.method in MUTATING_METHODS or g.get("audit_read"):
            record(response)
        return response
