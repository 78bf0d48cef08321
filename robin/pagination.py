"""Cursor pagination: the cursor is the last name of the previous page, opaque to clients.

Keyset rather than offset so pages stay stable while rows are added and cost the same at any depth.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from robin.errors import BadRequest

DEFAULT_LIMIT = 100


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": key}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise BadRequest("the cursor is not one this API returned; start again without it",
                         code="invalid_cursor") from exc
    if not isinstance(key, str):
        raise BadRequest("the cursor is not one this API returned; start again without it", code="invalid_cursor")
    return key


def paginate(session: Session, query: Select, key: InstrumentedAttribute, limit: int, cursor: str | None) -> Page:
    if cursor:
        query = query.where(key > decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(key).limit(limit + 1)).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(getattr(rows[-1], key.key)) if more else None)
