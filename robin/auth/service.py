"""API tokens: created once (the secret is shown once and only its hash is kept), looked up by hash."""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from robin.auth.identity import Identity
from robin.auth.models import ApiToken, DashboardSession, Role
from robin.db import db, utcnow
from robin.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from robin.pagination import Page, decode_cursor, encode_cursor
from robin.projects.models import Project

TOKEN_PREFIX = "robin_"
# Far enough for any real rotation schedule, near enough that the date fits every database's timestamp.
MAX_LIFETIME = timedelta(days=10 * 366)
# The largest id a token can have: a larger one (a 64-bit number in a URL) is no token's, not an error of the
# database's integer column.
MAX_TOKEN_ID = 2**31 - 1


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# What a secret chosen outside robin (a Secret made by an installer) must look like: as guessable as robin's own.
GIVEN_SECRET = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{32,200}")


def create_token(role: Role, *, project: str | None = None, name: str = "",
                 expires_in: timedelta | None = None) -> tuple[str, ApiToken]:
    return _register(TOKEN_PREFIX + secrets.token_urlsafe(32), role, project, name, expires_in)


def register_token(secret: str, role: Role, *, project: str | None = None, name: str = "",
                   expires_in: timedelta | None = None) -> bool:
    """Register a secret made elsewhere (an installer's Secret, so that one install makes both the token and its
    users); False when that secret is registered already, as the same role and project, which makes a rerun
    harmless. A revoked one stays revoked."""
    if not GIVEN_SECRET.fullmatch(secret):
        raise InvalidInput(f"a token must be {TOKEN_PREFIX!r} followed by 32 to 200 letters, digits, '-' or '_' "
                           f"(e.g. {TOKEN_PREFIX}$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='))")
    found = _registered(secret)
    if found is None:
        try:
            _register(secret, role, project, name, expires_in)
            return True
        except IntegrityError:  # a concurrent run registered it meanwhile
            found = _registered(secret)
    if found.revoked_at is not None:
        raise Conflict("this token was revoked: make a new secret", code="token_revoked")
    if (found.role, found.name) != (role, project):
        raise Conflict(f"this token is registered already as {found.role.value}"
                       f"{f' of project {found.name!r}' if found.name else ''}", code="token_exists")
    return False


def _registered(secret: str):
    with db.reading() as session:
        return session.execute(select(ApiToken.revoked_at, ApiToken.role, Project.name)
                               .outerjoin(Project, Project.id == ApiToken.project_id)
                               .where(ApiToken.token_hash == hash_secret(secret))).first()


def _register(secret: str, role: Role, project: str | None, name: str,
              expires_in: timedelta | None) -> tuple[str, ApiToken]:
    if (role is Role.MEMBER) != (project is not None):
        raise InvalidInput("a member token needs exactly one project; admin, auditor, metrics and node tokens need "
                           "none")
    if expires_in is not None:
        _check_lifetime(expires_in.total_seconds())
    with db.unit_of_work() as session:
        project_id = None
        if project is not None:
            project_id = session.scalar(select(Project.id).where(Project.name == project))
            if project_id is None:
                raise NotFound(f"project {project!r} does not exist", code="project_not_found")
        token = ApiToken(name=name or role.value, token_hash=hash_secret(secret), prefix=secret[:12],
                         role=role, project_id=project_id,
                         expires_at=utcnow() + expires_in if expires_in is not None else None)
        session.add(token)
    return secret, token


def authenticate(authorization: str | None) -> Identity:
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("send an API token as 'Authorization: Bearer <token>'")
    return identity_for_secret(secret.strip())


# Columns on a Core connection, built once: this runs on every request.
IDENTITY_COLUMNS = (ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.revoked_at, ApiToken.expires_at,
                    Project.name.label("project"))
IDENTITY_QUERY = (select(*IDENTITY_COLUMNS)
                  .outerjoin(Project, Project.id == ApiToken.project_id)
                  .where(ApiToken.token_hash == bindparam("token_hash")))


# How long a process reuses a token's row (role, project, revocation, expiry) before reading it again, counted from
# the moment the read began. A revoke in this process takes effect at once, everywhere else within this bound:
# revoke_everywhere waits it out before answering (docs/security.md). Expiry is checked on every request against the
# row's expires_at.
TOKEN_CACHE_TTL_S = 2.0
# The most tokens a process remembers: far more than the platform's clients use, and a bound on the memory.
TOKEN_CACHE_SIZE = 1024


class TokenCache:
    """Known tokens' rows by hash, each for ttl seconds. An unknown or revoked token is never cached: it is looked
    up again on its next use, so a token registered meanwhile works at once."""

    def __init__(self, ttl: float = TOKEN_CACHE_TTL_S, size: int = TOKEN_CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl, self.size, self.clock = ttl, size, clock
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[float, object]] = {}

    def get(self, token_hash: str):
        with self._lock:
            entry = self._rows.get(token_hash)
        if entry is None or self.clock() - entry[0] >= self.ttl:
            return None
        return entry[1]

    def put(self, token_hash: str, row, read_at: float) -> None:
        """Remember `row`, read from the database by a query begun at `read_at` (this cache's clock): its age
        counts from then, so a row read before a revocation committed is forgotten within ttl of that commit."""
        with self._lock:
            self._rows.pop(token_hash, None)
            while len(self._rows) >= self.size:
                del self._rows[next(iter(self._rows))]  # the oldest entry
            self._rows[token_hash] = (read_at, row)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


token_cache = TokenCache()


def identity_for_secret(secret: str) -> Identity:
    token_hash = hash_secret(secret)
    found = token_cache.get(token_hash)
    if found is None:
        read_at = token_cache.clock()
        # A read connection: on PostgreSQL the statement alone, one round trip, not BEGIN, it and a ROLLBACK.
        with db.read_connection() as connection:
            found = connection.execute(IDENTITY_QUERY, {"token_hash": token_hash}).first()
        if found is not None and found.revoked_at is None:
            token_cache.put(token_hash, found, read_at)
    return identity_of(found)


def identity_of(found) -> Identity:
    """The identity of a row of IDENTITY_COLUMNS, unless the token is unknown (None), revoked or expired."""
    if found is None or found.revoked_at is not None:
        raise Unauthenticated("the API token is unknown or revoked")
    if found.expires_at is not None and found.expires_at <= utcnow():
        raise Unauthenticated(f"the API token expired at {found.expires_at:%Y-%m-%dT%H:%M:%SZ}; ask for a new one "
                              "(robin token create)", code="token_expired")
    return Identity(name=found.name, role=found.role, project=found.project, token_id=found.id)


def revoke_token(token_id: int) -> None:
    """Revoke the token and end the dashboard sessions opened with it."""
    with db.unit_of_work() as session:
        token = session.get(ApiToken, token_id) if 0 < token_id <= MAX_TOKEN_ID else None
        if token is None:
            raise no_such_token(token_id)
        token.revoked_at = token.revoked_at or utcnow()
        session.execute(delete(DashboardSession).where(DashboardSession.token_id == token_id))
    token_cache.clear()  # in this process at once; elsewhere within TOKEN_CACHE_TTL_S


def revoke_everywhere(token_id: int) -> None:
    """Revoke the token, and return only once no process of any replica can still take it: every cache entry read
    before the revocation committed is forgotten TOKEN_CACHE_TTL_S after the commit at the latest."""
    revoke_token(token_id)
    time.sleep(TOKEN_CACHE_TTL_S)


LISTED_FIELDS = ("id", "name", "role", "project", "prefix", "created_at", "expires_at", "revoked_at")
LISTING_QUERY = (select(ApiToken.id, ApiToken.name, ApiToken.role, Project.name.label("project"), ApiToken.prefix,
                        ApiToken.created_at, ApiToken.expires_at, ApiToken.revoked_at)
                 .outerjoin(Project, Project.id == ApiToken.project_id))


def list_tokens() -> list[dict]:
    """Every token with what identifies it; never its hash (let alone its secret, which is not kept)."""
    with db.reading() as session:
        return [_listed(row) for row in session.execute(LISTING_QUERY.order_by(ApiToken.id))]


def token_page(limit: int, cursor: str | None) -> Page:
    """One page of list_tokens, by id."""
    query = LISTING_QUERY
    if cursor:
        (after,) = decode_cursor(cursor, (int,))
        query = query.where(ApiToken.id > after)
    with db.reading() as session:
        rows = [_listed(row) for row in session.execute(query.order_by(ApiToken.id).limit(limit + 1))]
    more = len(rows) > limit
    return Page(items=rows[:limit], next_cursor=encode_cursor([rows[limit - 1]["id"]]) if more else None)


def token_detail(token_id: int) -> dict:
    """What list_tokens says of one token; NotFound (token_not_found) for an id no token has."""
    found = None
    if 0 < token_id <= MAX_TOKEN_ID:
        with db.reading() as session:
            found = session.execute(LISTING_QUERY.where(ApiToken.id == token_id)).first()
    if found is None:
        raise no_such_token(token_id)
    return _listed(found)


def no_such_token(token_id: int | str) -> NotFound:
    return NotFound(f"token {token_id} does not exist: `robin token list` shows the tokens", code="token_not_found")


def _listed(row) -> dict:
    return {field: _plain(row._mapping[field]) for field in LISTED_FIELDS}


def _plain(value):
    return value.value if isinstance(value, Role) else value


def parse_lifetime(text: str) -> timedelta:
    """'30d', '12h', '90m', '3600s', '2w' -> a timedelta; InvalidInput otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not number.isdigit():
        raise InvalidInput(f"{text!r} is not a lifetime: give a number and a unit s, m, h, d or w (e.g. 30d)")
    seconds = int(number) * units[unit]
    _check_lifetime(seconds)
    return timedelta(seconds=seconds)


def _check_lifetime(seconds: float) -> None:
    if not 0 < seconds <= MAX_LIFETIME.total_seconds():
        raise InvalidInput("a token's lifetime must be positive and at most 10 years")
