"""Dashboard sessions: a random id in the browser's cookie, its hash and expiry here.

The cookie never carries the API token: a stolen cookie dies with its session (logout, expiry, or the
token's revocation), and the token itself stays a secret between the person and robin.
"""
from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import bindparam, delete, select

from robin.auth.identity import Identity
from robin.auth.models import ApiToken, DashboardSession
from robin.auth.service import IDENTITY_COLUMNS, hash_secret, identity_of
from robin.db import db, utcnow
from robin.errors import Unauthenticated
from robin.projects.models import Project

SESSION_QUERY = (select(*IDENTITY_COLUMNS, DashboardSession.expires_at.label("session_expires_at"))
                 .join(ApiToken, ApiToken.id == DashboardSession.token_id)
                 .outerjoin(Project, Project.id == ApiToken.project_id)
                 .where(DashboardSession.session_hash == bindparam("session_hash")))


def open_session(identity: Identity, lifetime: timedelta) -> str:
    """A new session for this token's identity -> the session id for the cookie. It ends with the token if
    the token expires first."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with db.unit_of_work() as session:
        # Expired sessions are refused anyway; forgetting them here keeps the table the size of who is logged in.
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
        token_expires = session.scalar(select(ApiToken.expires_at).where(ApiToken.id == identity.token_id))
        expires_at = min(now + lifetime, token_expires or now + lifetime)
        session.add(DashboardSession(session_hash=hash_secret(session_id), token_id=identity.token_id,
                                     created_at=now, expires_at=expires_at))
    return session_id


def identity_for_session(session_id: str) -> Identity:
    """The identity of a live session; Unauthenticated when it is unknown, ended or expired, or its token is
    revoked or expired."""
    with db.engine.connect() as connection:
        found = connection.execute(SESSION_QUERY, {"session_hash": hash_secret(session_id)}).first()
    if found is None:
        raise Unauthenticated("the dashboard session has ended", code="session_ended")
    if found.session_expires_at <= utcnow():
        raise Unauthenticated("the dashboard session expired", code="session_expired")
    return identity_of(found)


def end_session(session_id: str) -> None:
    with db.unit_of_work() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.session_hash == hash_secret(session_id)))
