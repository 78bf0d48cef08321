"""The dashboard for people (`/ui/`): read-only, server-rendered, behind robin's own tokens.

A person types a token once on `/ui/login`; it is kept in Flask's signed session cookie (HttpOnly,
SameSite=Strict) and checked with robin's own authentication on every page, so a revoked token ends
the session at the next click. The API's bearer hook leaves this blueprint to its session check.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Blueprint, Flask, flash, g, redirect, render_template, request, session, url_for

from robin import config
from robin.auth import service as auth
from robin.errors import RobinError, Unauthenticated
from robin.ui import service

blp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates",
                static_folder="static", static_url_path="/static")
OPEN_ENDPOINTS = frozenset({"ui.login", "ui.static"})
# Only robin's own files: no CDN, no inline script; style attributes carry the bars' widths.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def install(app: Flask) -> None:
    """Register the dashboard with a session key every worker of this deployment shares."""
    app.secret_key = _secret_key(config.state_dir() / "ui_secret")
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.jinja_env.filters.setdefault("human_bytes", service.human_bytes)
    app.register_blueprint(blp)


def _secret_key(path: Path) -> bytes:
    """Made once, 0600, in the state directory: gunicorn's workers (and restarts) must agree on it,
    or a session signed by one worker would be refused by the next."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic: the first worker's key wins, the others read it
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip().encode()


@blp.before_request
def _session_identity():
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    token = session.get("token")
    if not token:
        return _to_login(None)
    try:
        g.identity = auth.identity_for_secret(token)
    except Unauthenticated:
        session.clear()
        return _to_login("Your token is unknown or was revoked; please log in again.")
    return None


def _to_login(message: str | None):
    if request.endpoint == "ui.drift":  # a fragment: the page's script says the session ended
        return render_template("ui/session_ended.html"), 401
    if message:
        flash(message)
    return redirect(url_for("ui.login"))


@blp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("ui/login.html", error=None)
    token = request.form.get("token", "").strip()
    try:
        identity = auth.identity_for_secret(token) if token else None
    except Unauthenticated:
        identity = None
    if identity is None:
        return render_template("ui/login.html", error="That token is unknown or revoked."), 401
    session.clear()
    session["token"] = token
    g.identity = identity  # the audit event of this login names who logged in
    return redirect(url_for("ui.dashboard"))


@blp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("ui.login"))


@blp.route("/")
def dashboard():
    return render_template("ui/dashboard.html", identity=g.identity, **service.overview(g.identity))


@blp.route("/drift")
def drift():
    try:
        report = service.drift(g.identity)
    except RobinError as exc:
        return render_template("ui/drift.html", report=None, error=exc.message)
    return render_template("ui/drift.html", report=report, error=None)
