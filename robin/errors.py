"""The RobinError family, the one JSON error handler, and the one table mapping Ceph errors to API errors.

Every error a client can see has a stable `code` (clients branch on it), an HTTP status and a
message a person can act on: {"error": {"code", "message", "details"}}. robin.ceph raises plain
CephErrors; they reach a client only through CEPH_ERRORS.
"""
from __future__ import annotations

import json
import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

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


def _http_error_code(exc: HTTPException) -> str:
    if exc.code == 422:
        return "validation_error"
    if exc.code == 413:
        return RequestTooLarge.code
    return (exc.name or "error").lower().replace(" ", "_")


def _field_messages(messages: dict) -> dict:
    """webargs nests messages by location ("json", "query"); flatten them to field -> messages."""
    fields = {}
    for location_fields in messages.values():
        if isinstance(location_fields, dict):
            fields.update(location_fields)
    return fields


def _from_http_exception(exc: HTTPException) -> tuple[dict, int]:
    """Werkzeug and webargs errors (404 on unknown routes, 422 from schemas) in robin's shape."""
    messages = (getattr(exc, "data", None) or {}).get("messages") or {}
    code, message, details = _http_error_code(exc), exc.description or exc.name, {}
    if exc.code == 400 and isinstance(messages.get("json"), list):
        code, message = "invalid_json", "the request body is not valid JSON"
    elif messages:
        details["fields"] = _field_messages(messages)
        message = "invalid input: " + "; ".join(
            f"{name}: {' '.join(map(str, errs)) if isinstance(errs, list) else errs}"
            for name, errs in details["fields"].items())
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


def _body_too_deep() -> bool:
    try:
        json.loads(request.get_data(cache=True))
    except RecursionError:
        return True
    except ValueError:
        return False
    return False
