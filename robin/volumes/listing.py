"""Volume listings at the cost of their rows: one Core query of the columns a page shows (no ORM objects, no
relationship loads per row), and a plain function per kind that writes each item exactly as the kind's schema
(RbdImageSchema, CephfsPathSchema) would, field for field: the schemas stay what OpenAPI documents, and
tests/db/test_listings.py checks the two agree. Marshmallow took over half of a 500-item page.

Pages are keyset pages on the live (project_id, name) unique indexes: a page costs the same at any depth.

Columns whose conversion costs more than the page's query are read as text: timestamps as SQLite's stored text
or, on PostgreSQL, as UTC text the server writes (either rewritten by slicing; parsing them into datetimes and
writing those out again was a fifth of a page), states as their string, and the two JSON columns as text decoded
once per distinct text (an image's features and metadata repeat across a fleet).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, lru_cache

from sqlalchemy import (
    Integer,
    Select,
    String,
    Text,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from robin.clusters.models import CephCluster
from robin.pagination import Page, decode_cursor, encode_cursor
from robin.projects.models import Project
from robin.volumes.models import CephfsPath, RbdImage, Volume, VolumeState

# Spelled out rather than bound: a partial index (WHERE state != 'deleted') serves a query only when the
# planner can see the query's condition implies the index's, which a parameter (in a generic plan) hides.
DELETED = literal_column(f"'{VolumeState.DELETED.value}'")
KIND_NAMES = ("rbd", "cephfs")  # robin.volumes.kinds.KINDS' order: the API's names for them


def live(model: type[Volume]):
    return model.state != DELETED


def _iso(value: str | None) -> str | None:
    """A timestamp as the schemas write it (datetime.isoformat(), in UTC), from the UTC text utc_text() reads,
    rewritten by slicing: SQLite's stored 'YYYY-MM-DD HH:MM:SS.ffffff', or PostgreSQL's ISO text, whose fraction
    has its trailing zeros cut (none at all for a whole second, which has no fraction in isoformat() either). Any
    other text is parsed as SQLAlchemy would, naive as UTC."""
    if value is None:
        return None
    if len(value) == 26 and value[10] == " " and value[19] == ".":
        fraction = "" if value.endswith(".000000") else value[19:]
    elif len(value) == 19 and value[10] == " ":
        fraction = ""
    elif 20 < len(value) < 26 and value[10] == " " and value[19] == ".":
        fraction = value[19:].ljust(7, "0")
    else:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).isoformat()
    return f"{value[:10]}T{value[11:19]}{fraction}+00:00"


class utc_text(FunctionElement):
    """A timestamp column as text in UTC, 'YYYY-MM-DD HH:MM:SS[.ffffff]': SQLite's stored text as it is; on
    PostgreSQL the server's own text for the timestamp in UTC (in the ISO date style robin.db keeps every session
    in), which costs it what the text it sends for a timestamp costs anyway, and spares the driver's parsing and
    Python's isoformat(), four timestamps an item. (to_char would cost the server more than that saves.)"""

    type = String()
    name = "utc_text"
    inherit_cache = True


@compiles(utc_text)
def _utc_text_as_stored(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(utc_text, "postgresql")
def _utc_text_on_postgresql(element, compiler, **kw):
    return f"CAST(({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC') AS TEXT)"


def _raw(column, name: str | None = None):
    """The column as the driver gives it, without SQLAlchemy's conversion: see the state's `.value`."""
    return type_coerce(column, String).label(name or column.key)


def _timestamp(column, name: str):
    """A timestamp column as _iso() reads it."""
    return utc_text(column).label(name)


def _as_text(column, name: str):
    """A JSON column as its text (PostgreSQL's driver would decode it into new objects for every row)."""
    return cast(column, Text).label(name)


# Distinct texts seen, a bound on the memory: an image's features are one of a few lists, its metadata most often
# empty. The decoded values are shared between items, which are only ever encoded.
JSON_TEXTS_KEPT = 4096


@lru_cache(maxsize=JSON_TEXTS_KEPT)
def _features(text: str) -> list[str]:
    return [str(feature) for feature in json.loads(text)]


@lru_cache(maxsize=JSON_TEXTS_KEPT)
def _metadata(text: str) -> dict:
    return json.loads(text)


def _common_columns(model: type[Volume]) -> list:
    # Labelled by attribute: a CephFS path's size_bytes is its quota_bytes column.
    return [model.id, model.name, CephCluster.name.label("cluster"), model.size_bytes.label("size_bytes"),
            model.target_size_bytes.label("target_size_bytes"), _raw(model.state, "state"),
            _timestamp(model.created_at, "created_at"), _timestamp(model.updated_at, "updated_at"),
            _timestamp(model.deleted_at, "deleted_at"), _timestamp(model.purge_after, "purge_after"),
            model.created_for,
            model.project_id]


def _rbd_columns() -> list:
    # The parent's name by the model's correlated subquery, an index lookup per clone: a join would have the
    # planner hash the whole table for a page of many images.
    return [RbdImage.pool, _as_text(RbdImage.features, "features"), _as_text(RbdImage.image_metadata, "image_metadata"),
            RbdImage.parent_id, RbdImage.parent_name.label("parent_name"), RbdImage.parent_snapshot]


def _cephfs_columns() -> list:
    return [CephfsPath.fs_name, CephfsPath.layout, CephfsPath.path]


def _rbd_query(*columns) -> Select:
    return select(*_common_columns(RbdImage), *columns).join(CephCluster, CephCluster.id == RbdImage.cluster_id)


def _cephfs_query(*columns) -> Select:
    return select(*_common_columns(CephfsPath), *columns).join(CephCluster, CephCluster.id == CephfsPath.cluster_id)


# The items unpack their row by position, in _common_columns' order then the kind's: a row's attributes by name
# cost four times as much for a page.
def rbd_image_item(row, project: str) -> dict:
    """An image as RbdImageSchema writes it (VolumeSchema's fields first: used_bytes only ever comes with a single
    volume's ?with_used=true)."""
    (id_, name, cluster, size, target_size, state, created_at, updated_at, deleted_at, purge_after, created_for,
     _project_id, pool, features, metadata, parent_id, parent_name, parent_snapshot) = row
    return {"id": id_, "name": name, "project": project, "cluster": cluster,
            "provisioned_bytes": max(size, target_size or 0), "state": state,
            "created_at": _iso(created_at), "updated_at": _iso(updated_at), "deleted_at": _iso(deleted_at),
            "purge_after": _iso(purge_after), "created_for": created_for,
            "pool": pool, "size_bytes": size,
            "parent": None if parent_id is None else {"image": parent_name, "snapshot": parent_snapshot},
            "features": _features(features), "metadata": _metadata(metadata)}


def cephfs_path_item(row, project: str) -> dict:
    """A path as CephfsPathSchema writes it (VolumeSchema's fields first)."""
    (id_, name, cluster, size, target_size, state, created_at, updated_at, deleted_at, purge_after, created_for,
     _project_id, fs_name, layout, path) = row
    return {"id": id_, "name": name, "project": project, "cluster": cluster,
            "provisioned_bytes": max(size, target_size or 0), "state": state,
            "created_at": _iso(created_at), "updated_at": _iso(updated_at), "deleted_at": _iso(deleted_at),
            "purge_after": _iso(purge_after), "created_for": created_for,
            "fs": fs_name, "layout": layout, "path": path, "quota_bytes": size}


# Per kind, in KIND_NAMES' order: the model, its listing query and how an item is written. Built once.
LISTINGS: dict[type[Volume], tuple[Select, Callable[..., dict]]] = {
    RbdImage: (_rbd_query(*_rbd_columns()), rbd_image_item),
    CephfsPath: (_cephfs_query(*_cephfs_columns()), cephfs_path_item),
}


def in_trash(model: type[Volume]):
    return (model.state == DELETED) & model.purged_at.is_(None) & model.trash_ref.is_not(None)


TRASH_CURSOR_SHAPE = (str, str)  # the last item's (name, id)


@cache
def _project_query(model: type[Volume], trashed: bool, after: bool) -> Select:
    """A project's page, built once per kind and shape with every value bound: SQLAlchemy keys its cache of
    compiled statements by walking the statement, which for a statement built per request cost more than the
    page's query. The project is found by name within it (its unique index), the limit rendered inline (the
    planner sees it, as it would a literal)."""
    query, _ = LISTINGS[model]
    project_id = select(Project.id).where(Project.name == bindparam("project")).scalar_subquery()
    query = query.where(model.project_id == project_id, in_trash(model) if trashed else live(model))
    order = (model.name, model.id) if trashed else (model.name,)
    if after and trashed:
        query = query.where(tuple_(*order) > tuple_(bindparam("after_name"), bindparam("after_id")))
    elif after:
        query = query.where(model.name > bindparam("after_name"))
    return query.order_by(*order).limit(bindparam("limit", type_=Integer, literal_execute=True))


@cache
def _volume_query(model: type[Volume]) -> Select:
    """One live volume of a project by name, in a listing's columns, built once per kind."""
    query, _ = LISTINGS[model]
    project_id = select(Project.id).where(Project.name == bindparam("project")).scalar_subquery()
    return query.where(model.project_id == project_id, model.name == bindparam("name"), live(model))


def volume_item(connection: Connection, model: type[Volume], project: str, name: str) -> dict | None:
    """The project's live volume of that name as its listing writes it; None if there is none (or no project)."""
    row = connection.execute(_volume_query(model), {"project": project, "name": name}).first()
    return None if row is None else LISTINGS[model][1](row, project)


def project_page(connection: Connection, model: type[Volume], project: str, limit: int, cursor: str | None,
                 trashed: bool = False) -> Page:
    """A page of one project's live volumes of a kind (or those in its trash), by name, items in their wire form.
    A live name is unique in its project, the trash may hold several volumes of one name (each deleted in turn):
    its pages go by (name, id), so a page boundary between two of them skips neither. An empty page may mean there
    is no such project: the caller asks."""
    params = {"project": project, "limit": limit + 1}
    if cursor and trashed:
        params["after_name"], params["after_id"] = decode_cursor(cursor, TRASH_CURSOR_SHAPE)
    elif cursor:
        params["after_name"] = decode_cursor(cursor)
    rows = connection.execute(_project_query(model, trashed, bool(cursor)), params).all()
    more = len(rows) > limit
    item = LISTINGS[model][1]
    items = [item(row, project) for row in rows[:limit]]
    last = items[-1] if more else None
    return Page(items=items, next_cursor=None if last is None else
                encode_cursor([last["name"], last["id"]] if trashed else last["name"]))


# --- every volume a token sees, both kinds in one listing -----------------------------------------------------

CURSOR_SHAPE = (int, str, int)  # the last item's (project id, name, kind index)


def _across_queries() -> dict[type[Volume], Select]:
    """Each kind's listing query with the same columns, the other kind's as NULLs, so both go in one UNION ALL;
    each row says its kind (by index) and its project."""
    def named(kind_index: int) -> list:
        return [literal_column(str(kind_index)).label("kind_index"), Project.name.label("project")]

    def nulls(columns: list) -> list:
        # Typed: PostgreSQL takes a bare NULL in a subquery for text, which a UNION cannot match with json.
        return [cast(null(), column.type).label(column.key) for column in columns]

    return {RbdImage: _rbd_query(*named(0), *_rbd_columns(), *nulls(_cephfs_columns()))
            .join(Project, Project.id == RbdImage.project_id),
            CephfsPath: _cephfs_query(*named(1), *nulls(_rbd_columns()), *_cephfs_columns())
            .join(Project, Project.id == CephfsPath.project_id)}


ACROSS = _across_queries()
ITEMS = tuple(item for _, item in LISTINGS.values())  # by kind index
COMMON_WIDTH, RBD_WIDTH, CEPHFS_WIDTH = len(_common_columns(RbdImage)), len(_rbd_columns()), len(_cephfs_columns())


def _kind_columns(row, kind_index: int) -> tuple:
    """A row of ACROSS in its kind's item layout: the common columns, then the kind's own (after the kind index
    and the project, and for a CephFS path the RBD columns' NULLs)."""
    own = COMMON_WIDTH + 2 + (0 if kind_index == 0 else RBD_WIDTH)
    return row[:COMMON_WIDTH] + row[own:own + (RBD_WIDTH if kind_index == 0 else CEPHFS_WIDTH)]


@cache
def _across_query(by_project: bool, after_kind: int | None) -> Select:
    """The listing's statement for one shape (a project or all; from the start or after a cursor's kind), built
    once with every value bound, as _project_query is."""
    limit = bindparam("limit", type_=Integer, literal_execute=True)
    parts = []
    for kind_index, model in enumerate(LISTINGS):
        query = ACROSS[model].where(live(model))
        if by_project:
            query = query.where(model.project_id == select(Project.id).where(
                Project.name == bindparam("project")).scalar_subquery())
        if after_kind is not None:
            key = tuple_(model.project_id, model.name)
            since = tuple_(bindparam("after_project_id"), bindparam("after_name"))
            # At the cursor's own (project, name), a kind after the cursor's is still to come.
            query = query.where(key >= since if kind_index > after_kind else key > since)
        parts.append(select(query.order_by(model.project_id, model.name).limit(limit).subquery()))
    merged = union_all(*parts).subquery()
    return select(merged).order_by(merged.c.project_id, merged.c.name, merged.c.kind_index).limit(limit)


def across_page(connection: Connection, project: str | None, limit: int, cursor: str | None) -> Page:
    """A page of the live volumes of every project (or of `project`), both kinds, ordered by (project, name,
    kind), in one statement: each kind's next rows from its live (project_id, name) index, from the cursor on,
    merged and cut to the page by the database (its collation orders names, which Python's need not match).
    Items are the kind's, with `kind`. An empty page of a project may mean there is no such project: the caller
    asks."""
    params = {"project": project, "limit": limit + 1}
    after_kind = None
    if cursor:
        params["after_project_id"], params["after_name"], after_kind = decode_cursor(cursor, CURSOR_SHAPE)
    rows = connection.execute(_across_query(project is not None, after_kind), params).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        kind_index, project_name = row[COMMON_WIDTH], row[COMMON_WIDTH + 1]
        items.append({**ITEMS[kind_index](_kind_columns(row, kind_index), project_name),
                      "kind": KIND_NAMES[kind_index]})
    return Page(items=items, next_cursor=encode_cursor([rows[-1].project_id, rows[-1].name, rows[-1].kind_index])
                if more else None)
