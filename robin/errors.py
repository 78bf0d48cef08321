"""The RobinError family, the one JSON error handler, and the one table mapping Ceph errors to API errors.

Every error a client can see has a stable `code` (clients branch on it), an HTTP status and a
message a person can act on: {"error": {"code", "message", "details"}}. The OpenAPI document says so
too: `Api` documents that shape (ErrorSchema) for every error status on every operation. robin.ceph
raises plain CephErrors; they reach a client only through CEPH_ERRORS.
"""
from __future__ import annotations

import json
import logging
import math
from http import HTTPStatus

import flask_smorest
from apispec import BasePlugin
from flask import Flask, jsonify, request
from marshmallow import Schema, fields
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from robin.api_docs.operation_ids import OperationIds
from robin.ceph.errors import (
    CephAlreadyExists,
    CephBusy,
    CephError,
    CephHasSnapshots,
    CephInvalidArgument,
    CephNoSpace,
    CephNotFound,
    CephPermissionDenied,
    CephUnavailable,
)
from robin.db import db, is_lock_timeout

log = logging.getLogger(__name__)


class RobinError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(RobinError):
    status = 422
    code = "validation_error"


class BadRequest(RobinError):
    status = 400
    code = "bad_request"


class Unauthenticated(RobinError):
    status = 401
    code = "unauthenticated"


class Forbidden(RobinError):
    status = 403
    code = "forbidden"


class NotFound(RobinError):
    status = 404
    code = "not_found"


class Conflict(RobinError):
    status = 409
    code = "conflict"


class RequestTooLarge(RobinError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(RobinError):
    status = 415
    code = "unsupported_media_type"


class QuotaExceeded(RobinError):
    # 403 rather than 413/507: the request is well formed, the project is not allowed more.
    status = 403
    code = "quota_exceeded"


class ServiceUnavailable(RobinError):
    status = 503
    code = "unavailable"


class CephFailed(RobinError):
    # Ceph refused robin's own call: the request was fine, the storage behind robin was not.
    status = 502
    code = "ceph_error"


class StorageFull(RobinError):
    status = 507
    code = "ceph_no_space"


# The one table mapping Ceph errors to API errors. A Ceph error answers as the entry of its nearest
# class here (CephNotConnected as CephUnavailable), with its own message and details.
CEPH_ERRORS: dict[type[CephError], tuple[type[RobinError], str]] = {
    CephNotFound: (NotFound, "ceph_not_found"),
    CephAlreadyExists: (Conflict, "ceph_already_exists"),
    CephBusy: (Conflict, "ceph_busy"),
    CephHasSnapshots: (Conflict, "ceph_has_snapshots"),
    CephInvalidArgument: (InvalidInput, "ceph_invalid_argument"),
    CephNoSpace: (StorageFull, "ceph_no_space"),
    # robin's own Ceph user lacks caps: a deployment problem, not the client's.
    CephPermissionDenied: (CephFailed, "ceph_permission_denied"),
    CephUnavailable: (ServiceUnavailable, "ceph_unavailable"),
    CephError: (CephFailed, "ceph_error"),
}


def api_error(exc: RobinError | CephError) -> RobinError:
    """The API error an error answers as: a RobinError itself, a Ceph error as CEPH_ERRORS says."""
    if isinstance(exc, RobinError):
        return exc
    error_class, code = next(CEPH_ERRORS[kind] for kind in type(exc).__mro__ if kind in CEPH_ERRORS)
    return error_class(exc.message, details=exc.details, code=code)


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"description": "stable: clients branch on it"})
    message = fields.String(required=True, metadata={"description": "what went wrong, for a person to act on"})
    details = fields.Dict(required=True, metadata={"description": "the specifics: bad fields, limits, names"})


class ErrorSchema(Schema):
    """Every error answer's body (the `Error` component of the OpenAPI document)."""

    error = fields.Nested(ErrorBodySchema, required=True)


# Every status robin may answer an operation with besides its success: any operation can meet a bad
# token (401), a role or quota refusal (403), a missing project or volume (404), a state conflict (409),
# a body over the limit (413, checked before routing), invalid input (400, 422), Ceph failing (502, 503, 507)
# or a bug (500). Listing them instead of a `default` response lets a client (and a fuzzer) tell an
# answer the document promises from one it does not.
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 500, 502, 503, 507)


class ErrorStatuses(BasePlugin):
    """An apispec plugin: documents ERROR_STATUSES on every operation, with robin's error body, or as
    plain text under the prefixes registered with `plain_text_under` (Wayne's /v1 answers errors so)."""

    def __init__(self) -> None:
        self.plain_text_prefixes: list[str] = []

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        plain_text = any(path.startswith(prefix) for prefix in self.plain_text_prefixes)
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status in ERROR_STATUSES:
                responses.pop(status, None)  # flask-smorest's own 422, keyed by the integer
                responses[str(status)] = _plain_text_error(status) if plain_text else HTTPStatus(status).name


def _plain_text_error(status: int) -> dict:
    return {"description": HTTPStatus(status).phrase, "content": {"text/plain": {"schema": {
        "type": "string", "description": "`<code>: <message>`, robin's error code first"}}}}


class Api(flask_smorest.Api):
    """flask-smorest's Api, documenting robin's error shape and every error status (no `default`), and naming
    every operation (robin.api_docs.operation_ids)."""

    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None

    def __init__(self, app: Flask) -> None:
        self.error_statuses = ErrorStatuses()
        super().__init__(app, spec_kwargs={"extra_plugins": [self.error_statuses, OperationIds()]})

    def plain_text_errors_under(self, prefix: str) -> None:
        """Operations under `prefix`, registered from now on, answer errors in plain text."""
        self.error_statuses.plain_text_prefixes.append(prefix)


def _http_error_code(exc: HTTPException) -> str:
    if exc.code == 422:
        return "validation_error"
    if exc.code == 413:
        return RequestTooLarge.code
    return (exc.name or "error").lower().replace(" ", "_")


def _field_messages(messages: dict) -> dict:
    """webargs nests messages by location ("json", "query"); flatten them to field -> messages, with every
    key a string: marshmallow keys a list's items by their index, and a list field can hold both
    {0: [...]} and "_schema" (its own validator), which JSON (sorted keys) cannot mix."""
    fields = {}
    for location_fields in messages.values():
        if isinstance(location_fields, dict):
            fields.update(_string_keys(location_fields))
    return fields


def _string_keys(messages):
    if not isinstance(messages, dict):
        return messages
    return {str(key): _string_keys(value) for key, value in messages.items()}


def _message_lines(messages: dict, prefix: str = "") -> list[str]:
    """"field: message" for every message, nested fields named by their path (`features.0`, `quota.max_bytes`)."""
    lines = []
    for name, errors in messages.items():
        path = prefix if name == "_schema" and prefix else f"{prefix}{name}"
        if isinstance(errors, dict):
            lines += _message_lines(errors, f"{path}.")
        else:
            lines.append(f"{path.rstrip('.')}: {' '.join(map(str, errors)) if isinstance(errors, list) else errors}")
    return lines


def _from_http_exception(exc: HTTPException) -> tuple[dict, int]:
    """Werkzeug and webargs errors (404 on unknown routes, 422 from schemas) in robin's shape."""
    messages = (getattr(exc, "data", None) or {}).get("messages") or {}
    code, message, details = _http_error_code(exc), exc.description or exc.name, {}
    if exc.code == 400 and isinstance(messages.get("json"), list):
        code, message = "invalid_json", "the request body is not valid JSON"
    elif messages:
        details["fields"] = _field_messages(messages)
        message = "invalid input: " + "; ".join(_message_lines(details["fields"]))
    return {"error": {"code": code, "message": message, "details": details}}, exc.code or 500


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RobinError)
    def _robin_error(exc: RobinError):
        if exc.status >= 500:
            log.warning("request failed", extra={"code": exc.code, "error": exc.message})
        return jsonify(exc.to_dict()), exc.status

    @app.errorhandler(CephError)
    def _ceph_error(exc: CephError):
        return _robin_error(api_error(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        body, status = _from_http_exception(exc)
        return jsonify(body), status

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError):
        if is_lock_timeout(exc):
            return _database_busy(exc)
        # The database could not be reached or broke the connection (its deadlines are in robin.db; the server
        # ends a session idle in a transaction with an InternalError, which SQLAlchemy takes for a disconnect too):
        # the request may be retried, which a 500 would not say. Any other refusal is a bug.
        if not isinstance(exc, OperationalError) and not exc.connection_invalidated:
            return _unexpected(exc)
        log.warning("database unavailable", extra={"error": str(exc.orig)})
        error = ServiceUnavailable("the database did not answer; retry later", code="database_unavailable")
        return jsonify(error.to_dict()), error.status

    def _database_busy(exc: DBAPIError):
        # The database answered: a lock this request needs was held by another transaction for the whole lock
        # timeout. Its transaction rolled back, and the connection stays in the pool (no disconnect).
        error = _lock_wait_timed_out((request.view_args or {}).get("project"), db.lock_timeout)
        log.warning("database lock wait timed out", extra={**error.details, "error": str(exc.orig)})
        response = jsonify(error.to_dict())
        # The lock timeout: a held lock is not freed by asking again at once, and each ask holds a request thread
        # for that long.
        response.headers["Retry-After"] = str(max(1, math.ceil(db.lock_timeout)))
        return response, error.status

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError):
        # The JSON parser recurses: a body nested some thousand deep fits the size limit and still cannot be read.
        if _body_too_deep():
            error = BadRequest("the request body is nested too deeply to parse", code="invalid_json")
            return jsonify(error.to_dict()), error.status
        return _unexpected(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # The one place a bare Exception is caught: log it whole, tell the client nothing internal.
        log.exception("unhandled error")
        body = {"error": {"code": "internal_error", "message": "internal error; see robin's log", "details": {}}}
        return jsonify(body), 500


def _lock_wait_timed_out(project: str | None, lock_timeout: float) -> ServiceUnavailable:
    """503 database_busy: another transaction held a lock the request needed (in `project`'s rows when the request
    names one: its quota row, one of its volumes) for longer than the lock timeout."""
    details = {"lock_timeout_seconds": lock_timeout}
    if project is None:
        held = "a database lock this request needs"
    else:
        held, details["project"] = f"a lock of project {project!r} (its quota or one of its volumes)", project
    return ServiceUnavailable(f"another transaction held {held} for longer than ROBIN_DATABASE_LOCK_TIMEOUT "
                              f"({lock_timeout:g} s); retry", code="database_busy", details=details)


def _body_too_deep() -> bool:
    try:
        json.loads(request.get_data(cache=True))
    except RecursionError:
        return True
    except ValueError:
        return False
    return False
