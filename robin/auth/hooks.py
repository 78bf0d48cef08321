"""Authenticate every request except the few that must answer without a token."""
from __future__ import annotations

from flask import Flask, g, request

from robin import api_docs
from robin.auth import service

PUBLIC_ENDPOINTS = frozenset({
    "health.healthz", "health.readyz",
    "api-docs.openapi_json", "static",
}) | api_docs.PUBLIC_ENDPOINTS
# The dashboard (robin/ui) checks its own server-side sessions (robin.auth.sessions) instead.
SESSION_BLUEPRINTS = frozenset({"ui"})


def install(app: Flask) -> None:
    @app.before_request
    def _authenticate():
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return  # None: an unknown URL, which answers 404 either way
        if request.blueprint in SESSION_BLUEPRINTS:
            return
        g.identity = service.authenticate(request.headers.get("Authorization"))
