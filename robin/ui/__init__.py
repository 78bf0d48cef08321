"""The dashboard for people (`/ui/`): read-only, server-rendered, behind robin's own tokens.

A person types a token once on `/ui/login`; robin opens a server-side session (robin.auth.sessions) and the
browser keeps only its random id, in Flask's signed cookie: HttpOnly, SameSite=Lax, Secure over HTTPS, expiring.
Every page checks the session, so logout, expiry or the token's revocation ends it at the next click. Every form
carries a CSRF token kept in that cookie. The API's bearer hook leaves this blueprint to its session check.
"""
from __future__ import annotations

import secrets
from datetime import timedelta
from functools import partial

from flask import Blueprint, Flask, flash, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from marshmallow import ValidationError

from robin import config, crypto
from robin.audit import events
from robin.audit.events_api import EventArgs
from robin.auth import service as auth
from robin.auth import sessions
from robin.ceph import CephError
from robin.errors import RobinError, Unauthenticated
from robin.ui import service
from robin.units import human_bytes

blp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates",
                static_folder="static", static_url_path="/static")
OPEN_ENDPOINTS = frozenset({"ui.login", "ui.static"})
# Only robin's own files: no CDN, no inline script; style attributes carry the bars' widths.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SESSION_ID, CSRF = "sid", "csrf"  # the keys of the signed cookie
SIGNING_PURPOSE = "robin dashboard session cookie"
ENDED = {
    "session_expired": "Your session expired; please log in again.",
    "token_expired": "Your token expired; please log in again with a new one.",
}
FORM_REFUSED = "This form expired or did not come from robin's page: reload the page and try again."


class _SessionCookie(SecureCookieSessionInterface):
    """The dashboard's session: secure whenever the browser came over HTTPS, not only when ROBIN_UI_SECURE_COOKIES
    says so; and only the dashboard's requests have one."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure

    def open_session(self, app: Flask, request):
        # Every other request (the API's) has none: Flask opened one for each, building a signer and reading the
        # cookie (a browser sends it to any path of the host), 0.02 to 0.05 ms of every request (BENCHMARKS.md).
        if request.path != blp.url_prefix and not request.path.startswith(blp.url_prefix + "/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def install(app: Flask) -> None:
    """Register the dashboard with a cookie-signing key every worker and every replica of this deployment shares:
    derived from the secret key (ROBIN_SECRET_KEY or ROBIN_SECRET_KEY_FILE), which they must share anyway, so a
    load balancer may send a browser to any replica."""
    settings = app.config["ROBIN_SETTINGS"]
    app.secret_key = crypto.derived_key(settings, SIGNING_PURPOSE)
    app.session_interface = _SessionCookie()
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=settings.ui_secure_cookies,
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.ui_session_seconds))
    app.jinja_env.filters.setdefault("human_bytes", partial(human_bytes, missing="–"))  # an unmeasured size
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(blp)


def csrf_token() -> str:
    """This browser's CSRF token, made on first use: every POST form of the dashboard carries it."""
    if CSRF not in session:
        session[CSRF] = secrets.token_urlsafe(32)
    return session[CSRF]


@blp.before_request
def _check_csrf():
    """A POST must carry the token of the page it came from: another site cannot read it, so cannot forge it."""
    if request.method != "POST":
        return None
    sent, expected = request.form.get("csrf_token", ""), session.get(CSRF, "")
    if expected and secrets.compare_digest(sent, expected):
        return None
    if request.endpoint == "ui.login":
        return render_template("ui/login.html", error=FORM_REFUSED), 400
    return render_template("ui/form_refused.html", message=FORM_REFUSED), 400


@blp.before_request
def _session_identity():
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    session_id = session.get(SESSION_ID)
    if not session_id:
        return _to_login(None)
    try:
        g.identity = sessions.identity_for_session(session_id)
    except Unauthenticated as exc:
        session.pop(SESSION_ID, None)
        return _to_login(ENDED.get(exc.code, "Your session ended or its token was revoked; please log in again."))
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
        error = None
    except Unauthenticated as exc:
        identity, error = None, exc.message if exc.code == "token_expired" else None
    if identity is None:
        return render_template("ui/login.html", error=error or "That token is unknown or revoked."), 401
    _end_session()  # this browser's earlier session, if any: one login, one session
    lifetime = timedelta(seconds=config.current().ui_session_seconds)
    session_id = sessions.open_session(identity, lifetime)
    session.clear()
    session.update({SESSION_ID: session_id, CSRF: secrets.token_urlsafe(32)})  # a new CSRF token with the session
    session.permanent = True  # the cookie expires (PERMANENT_SESSION_LIFETIME); the row's expiry is what counts
    g.identity = identity  # the audit event of this login names who logged in
    return redirect(url_for("ui.dashboard"))


@blp.route("/logout", methods=["POST"])
def logout():
    _end_session()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("ui.login"))


def _end_session() -> None:
    if session.get(SESSION_ID):
        sessions.end_session(session[SESSION_ID])


@blp.route("/")
def dashboard():
    return render_template("ui/dashboard.html", identity=g.identity, **service.overview(g.identity))


@blp.route("/drift")
def drift():
    try:
        report = service.drift(g.identity)
    except (RobinError, CephError) as exc:
        return render_template("ui/drift.html", report=None, error=exc.message)
    return render_template("ui/drift.html", report=report, error=None)


@blp.route("/projects/<project>")
def project(project):
    """A project's usage over time as charts (?days= one of service.HISTORY_DAYS), and when it fills at its growth
    rate; a project the session may not read, or none by that name, is said on the page with the API's status."""
    days = request.args.get("days", service.DEFAULT_HISTORY_DAYS, type=int)
    if days not in service.HISTORY_DAYS:
        days = service.DEFAULT_HISTORY_DAYS
    try:
        view = service.project_page(g.identity, project, days)
    except RobinError as exc:
        return render_template("ui/project.html", identity=g.identity, project=project, error=exc.message,
                               ranges=service.HISTORY_DAYS, days=days), exc.status
    return render_template("ui/project.html", identity=g.identity, error=None, ranges=service.HISTORY_DAYS, **view)


EVENT_FILTERS = ("project", "actor", "action", "outcome", "target", "since", "until")
EVENTS_A_PAGE = 100


@blp.route("/audit")
def audit():
    """The audit trail with the API's filters (GET /api/v2/audit/events), a page at a time; a filter refused is
    said on the page, with the status the API would answer."""
    asked = {name: request.args.get(name, "").strip() for name in (*EVENT_FILTERS, "cursor")}
    page, error, status = None, None, 200
    try:
        filters = EventArgs().load({name: value for name, value in asked.items() if value} | {"limit": EVENTS_A_PAGE})
        page = events.page(g.identity, filters, EVENTS_A_PAGE, filters["cursor"])
    except ValidationError as exc:
        error, status = "; ".join(f"{name}: {' '.join(problems)}" for name, problems in exc.messages.items()), 422
    except RobinError as exc:
        error, status = exc.message, exc.status
    older = page and page.next_cursor and url_for("ui.audit", **{name: value for name, value in asked.items()
                                                                  if value and name != "cursor"},
                                                  cursor=page.next_cursor)
    return render_template("ui/audit.html", identity=g.identity, asked=asked, page=page, error=error,
                           outcomes=events.OUTCOMES, older=older), status
