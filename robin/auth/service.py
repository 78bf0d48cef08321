"""API tokens: created once (the secret is shown once and only its hash is kept), looked up by hash."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import bindparam, select

from robin.auth.identity import Identity
from robin.auth.models import ApiToken, Role
from robin.db import db, utcnow
from robin.errors import InvalidInput, NotFound, Unauthenticated
from robin.projects.models import Project

TOKEN_PREFIX = "robin_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(role: Role, *, project: str | None = None, name: str = "") -> tuple[str, ApiToken]:
    if (role is Role.MEMBER) != (project is not None):
        raise InvalidInput("a member token needs exactly one project; admin and auditor tokens need none")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.unit_of_work() as session:
        project_id = None
        if project is not None:
            project_id = session.scalar(select(Project.id).where(Project.name == project))
            if project_id is None:
                raise NotFound(f"project {project!r} does not exist", code="project_not_found")
        token = ApiToken(name=name or role.value, token_hash=_hash(secret), prefix=secret[:12],
                         role=role, project_id=project_id)
        session.add(token)
    return secret, token


def authenticate(authorization: str | None) -> Identity:
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("send an API token as 'Authorization: Bearer <token>'")
    return identity_for_secret(secret.strip())


# Columns on a Core connection, built once: this runs on every request.
IDENTITY_QUERY = (select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.revoked_at, Project.name)
                  .outerjoin(Project, Project.id == ApiToken.project_id)
                  .where(ApiToken.token_hash == bindparam("token_hash")))


def identity_for_secret(secret: str) -> Identity:
    with db.engine.connect() as connection:
        found = connection.execute(IDENTITY_QUERY, {"token_hash": _hash(secret)}).first()
    if found is None or found.revoked_at is not None:
        raise Unauthenticated("the API token is unknown or revoked")
    return Identity(name=found.name, role=found.role, project=found[4], token_id=found.id)


def revoke_token(token_id: int) -> None:
    with db.unit_of_work() as session:
        token = session.get(ApiToken, token_id)
        if token is None:
            raise NotFound(f"token {token_id} does not exist", code="token_not_found")
        token.revoked_at = token.revoked_at or utcnow()
