"""Cursor pagination: the cursor is the key (a name, an id, or a few columns) of the last item of the previous
page, opaque to clients.

Keyset rather than offset so pages stay stable while rows are added and cost the same at any depth.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from robin.errors import BadRequest

DEFAULT_LIMIT = 100


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


def encode_cursor(key: str | list) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": key}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shape: tuple[type, ...] | None = None) -> Any:
    """The key a cursor holds: a string, or with `shape` a tuple of values of those types."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise _invalid_cursor() from exc
    if shape is None:
        if not isinstance(key, str):
            raise _invalid_cursor()
        return key
    if not (isinstance(key, list) and len(key) == len(shape)
            and all(type(value) is kind for value, kind in zip(key, shape, strict=True))):
        raise _invalid_cursor()
    return tuple(key)


def _invalid_cursor() -> BadRequest:
    return BadRequest("the cursor is not one this API returned; start again without it", code="invalid_cursor")


def page_response(page: Page) -> Response:
    """A page whose items are already in their wire form, as the JSON response the route's schema documents:
    flask-smorest passes a Response through undumped, which saves marshmallow's per-field walk over every item
    (the functions that wrote the items are checked against the schemas by the tests)."""
    return jsonify({"items": page.items, "next_cursor": page.next_cursor})


def paginate(session: Session, query: Select, key: InstrumentedAttribute, limit: int, cursor: str | None) -> Page:
    if cursor:
        query = query.where(key > decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(key).limit(limit + 1)).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(getattr(rows[-1], key.key)) if more else None)
