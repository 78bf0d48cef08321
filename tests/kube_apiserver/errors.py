"""Kubernetes-style API errors, rendered as `Status` objects."""
from __future__ import annotations


class ApiError(Exception):
    """An error answered as a `Status` object with the given HTTP code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}
    if details:
        status["details"] = details
    return status


def _details(rt, name: str | None) -> dict:
    details = {"kind": rt.plural}
    if name:
        details = {"name": name, **details}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def already_exists(rt, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', _details(rt, name))


def conflict(rt, name: str, why: str = "the object has been modified; please apply your changes to the latest "
                                      "version and try again") -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
                    _details(rt, name))


def forbidden(rt, name: str, why: str) -> ApiError:
    """As an admission plugin refuses a request."""
    return ApiError(403, "Forbidden", f'{rt.group_resource} "{name}" is forbidden: {why}', _details(rt, name))


def invalid(rt, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (reason, field, message), e.g. ("FieldValueRequired", "spec.accessModes", "Required value")."""
    text = ", ".join(f"{field}: {message}" for _, field, message in causes)
    details = {"name": name, "kind": rt.kind,
               "causes": [{"reason": r, "field": f, "message": m} for r, f, m in causes]}
    if rt.group:
        details["group"] = rt.group
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {text}' if len(causes) == 1
                    else f'{rt.kind} "{name}" is invalid: [{text}]', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unsupported_media_type(accepted) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                                                 f"media types include: {', '.join(accepted)}")


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})
