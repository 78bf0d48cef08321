"""Listings write their items with plain functions (robin.volumes.listing, snapshot_item, the project listing):
the JSON must be exactly what the documented schemas write. And GET /api/v2/volumes pages through every live
volume a token sees, both kinds, each once.

Rows come from tests/support/synthetic.py (no Ceph: listings read rows), with a clone, a resize under way and
snapshots among them; an app of their own serves them through Flask's test client.
"""
from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from robin.auth.models import Role
from robin.db import db, upgrade
from robin.projects.models import Project
from robin.projects.schemas import ProjectSchema
from robin.snapshots.models import Snapshot, SnapshotState
from robin.snapshots.schemas import SnapshotListingSchema, SnapshotSchema
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from robin.volumes.schemas import CephfsPathSchema, RbdImageSchema
from tests.conftest import unique
from tests.support.synthetic import Fleet, populate

COLLECTIONS = {"rbd-images": (RbdImage, RbdImageSchema), "cephfs-paths": (CephfsPath, CephfsPathSchema)}
KINDS = {"rbd": (RbdImage, RbdImageSchema), "cephfs": (CephfsPath, CephfsPathSchema)}


@pytest.fixture(scope="module")
def listing_url(backend, request, tmp_path_factory, database_url):
    """A database of the module's own: the synthetic fleet (a cluster whose conf does not exist among it) must
    not be met by the session's other tests, such as the drift survey's."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('listings') / 'robin.db'}"
    else:
        server = request.getfixturevalue("postgres")
        if isinstance(server, str):  # ROBIN_TEST_POSTGRES_URL names one database: the fleet shares it
            yield database_url
            return
        url = server.create_database("robin_listings_" + uuid.uuid4().hex[:12])
    upgrade(url)
    previous = db.engine.url.render_as_string(hide_password=False) if db.engine is not None else None
    try:
        yield url
    finally:
        db.dispose()  # the session's other tests use robin's one database handle: pointed back at theirs
        if previous is not None:
            db.configure(previous)


@pytest.fixture(scope="module")
def listing_app(listing_url, settings):
    from robin import create_app

    # The session's settings but the database: an app binds process-wide state (the Ceph connections' timeout
    # among it) that the session's later tests rely on.
    return create_app(dataclasses.replace(settings, database_url=listing_url))


@pytest.fixture(scope="module")
def fleet(listing_app) -> Fleet:
    fleet = Fleet(prefix=unique("lst"), projects=3, volumes=90, big_project_volumes=40, snapshots=60, tokens=1,
                  audit_events=1)
    populate(db.engine, fleet)
    with db.unit_of_work() as session:
        images = list(session.scalars(select(RbdImage).join(Project).where(
            Project.name == fleet.big_project, RbdImage.state == VolumeState.AVAILABLE).order_by(RbdImage.name)))
        # A clone of the first image, and an image being resized.
        session.execute(update(RbdImage).where(RbdImage.id == images[1].id).values(
            parent_id=images[0].id, parent_snapshot="snap-0", features=["layering"], image_metadata={}))
        session.execute(update(RbdImage).where(RbdImage.id == images[2].id).values(
            state=VolumeState.RESIZING, target_size_bytes=3 * 2**30))
        # Timestamps with a fraction of a second, as real ones have (the synthetic ones are whole seconds): the
        # listings write them from text, the schemas from datetimes.
        for model in (RbdImage, CephfsPath):
            for number, volume in enumerate(session.scalars(select(model).join(Project).where(
                    Project.name == fleet.big_project))):
                volume.created_at += timedelta(microseconds=7)
                volume.updated_at += timedelta(microseconds=120_000 * (number % 2))
                if volume.deleted_at is not None:
                    volume.deleted_at += timedelta(microseconds=999_999)
    return fleet


@pytest.fixture()
def client_as(listing_app):
    """client_as(role, project=None) -> get(path, **query) with a new token of that role."""
    def make(role: str, project: str | None = None):
        return _client(listing_app, role, project)
    return make


def _client(app, role: str, project: str | None):
    from robin.auth.service import create_token

    with app.app_context():
        token = create_token(Role(role), project=project, name=f"listings-{role}")[0]
    client = app.test_client()
    return lambda path, **query: client.get(path, query_string=query, headers={"Authorization": f"Bearer {token}"})


def every_page(get, path: str, **query) -> list[dict]:
    items, cursor = [], None
    while True:
        response = get(path, **query, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.json
        items += response.json["items"]
        cursor = response.json["next_cursor"]
        if cursor is None:
            return items


def schema_dumps(model, schema, ids: list[str]) -> dict[str, dict]:
    """What marshmallow writes for these rows, loaded as the ORM loads them."""
    with db.reading() as session:
        return {row.id: schema().dump(row) for row in session.scalars(select(model).where(model.id.in_(ids)))}


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest.mark.parametrize("trashed", [False, True])
def test_volume_listing_items_are_what_the_schema_writes(fleet, client_as, collection, trashed):
    model, schema = COLLECTIONS[collection]
    get = client_as("auditor")
    items = every_page(get, f"/api/v2/projects/{fleet.big_project}/{collection}", limit=7,
                       trashed=str(trashed).lower())
    assert items and [item["name"] for item in items] == sorted(item["name"] for item in items)
    assert all((item["state"] == "deleted") == trashed for item in items)
    expected = schema_dumps(model, schema, [item["id"] for item in items])
    assert {item["id"]: item for item in items} == expected
    if collection == "rbd-images" and not trashed:
        assert any(item["parent"] for item in items) and any(item["provisioned_bytes"] > item["size_bytes"]
                                                             for item in items)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_one_volume_by_name_is_what_the_schema_writes(fleet, client_as, collection):
    model, schema = COLLECTIONS[collection]
    get = client_as("auditor")
    path = f"/api/v2/projects/{fleet.big_project}/{collection}"
    names = [item["name"] for item in every_page(get, path, limit=50)]
    items = {}
    for name in names:
        response = get(f"{path}/{name}")
        assert response.status_code == 200, response.json
        items[response.json["id"]] = response.json
    assert items == schema_dumps(model, schema, list(items))
    missing = get(f"{path}/no-such-volume")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "volume_not_found", missing.json
    missing = get(f"/api/v2/projects/no-such-project/{collection}/{names[0]}")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "project_not_found", missing.json


def test_every_volume_listing_pages_through_each_live_volume_once(fleet, client_as):
    get = client_as("admin")
    items = every_page(get, "/api/v2/volumes", limit=9, project=fleet.big_project)
    with db.reading() as session:
        live = {(kind, name) for kind, (model, _) in KINDS.items() for name in session.scalars(
            select(model.name).join(Project).where(Project.name == fleet.big_project,
                                                   model.state != VolumeState.DELETED))}
    listed = [(item["kind"], item["name"]) for item in items]
    assert len(listed) == len(set(listed)) and set(listed) == live
    for kind, (model, schema) in KINDS.items():
        of_kind = {item["id"]: {k: v for k, v in item.items() if k != "kind"} for item in items
                   if item["kind"] == kind}
        assert of_kind == schema_dumps(model, schema, list(of_kind))
    # Every project the admin sees, this fleet's among them, in pages of 1,000.
    everything = {(item["project"], item["kind"], item["name"]) for item in every_page(get, "/api/v2/volumes")}
    assert {(fleet.big_project, kind, name) for kind, name in live} <= everything


def test_every_volume_listing_shows_a_member_its_project_only(fleet, client_as):
    own = fleet.project(1)
    get = client_as("member", own)
    items = every_page(get, "/api/v2/volumes", limit=4)
    assert items and {item["project"] for item in items} == {own}
    assert every_page(get, "/api/v2/volumes", project=own) == items
    refused = get("/api/v2/volumes", project=fleet.big_project)
    assert refused.status_code == 403, refused.json


def test_every_volume_listing_refuses_bad_arguments(fleet, client_as):
    get = client_as("admin")
    for cursor in ("not-a-cursor", "eyJhZnRlciI6ICJ2b2wifQ"):  # the second: a project listing's cursor
        response = get("/api/v2/volumes", cursor=cursor)
        assert response.status_code == 400 and response.json["error"]["code"] == "invalid_cursor", response.json
    missing = get("/api/v2/volumes", project="no-such-project")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "project_not_found"


def test_snapshot_listing_items_are_what_the_schemas_write(fleet, client_as):
    get = client_as("admin")
    with db.reading() as session:
        image, project_id = session.execute(
            select(RbdImage.name, RbdImage.project_id).join(Snapshot, Snapshot.rbd_image_id == RbdImage.id)
            .join(Project, Project.id == RbdImage.project_id).where(Project.name == fleet.big_project)
            .limit(1)).one()
        snapshots = list(session.scalars(select(Snapshot).join(RbdImage, Snapshot.rbd_image_id == RbdImage.id)
                                         .where(RbdImage.name == image, RbdImage.project_id == project_id)))
        expected = {snapshot.id: SnapshotSchema().dump(snapshot) for snapshot in snapshots}
    items = every_page(get, f"/api/v2/projects/{fleet.big_project}/rbd-images/{image}/snapshots", limit=1)
    assert {item["id"]: item for item in items} == expected

    across = every_page(get, "/api/v2/snapshots", project=fleet.big_project, limit=5)
    assert across
    with db.reading() as session:
        rows = {row.id: row for row in session.scalars(select(Snapshot).where(
            Snapshot.id.in_([item["id"] for item in across]), Snapshot.state != SnapshotState.DELETED))}
    for item in across:
        row = rows[item["id"]]
        volume = row.volume
        assert item == SnapshotListingSchema().dump({
            "id": row.id, "name": row.name, "project": fleet.big_project, "volume": volume.name,
            "volume_kind": "rbd" if row.rbd_image_id else "cephfs", "size_bytes": row.size_bytes,
            "state": row.state.value, "created_at": row.created_at})


def test_project_listing_items_are_what_the_schema_writes(fleet, client_as):
    items = every_page(client_as("admin"), "/api/v2/projects", limit=2)
    ours = {item["name"]: item for item in items if item["name"].startswith(fleet.prefix)}
    assert len(ours) == fleet.projects + 1
    with db.reading() as session:
        expected = {project.name: ProjectSchema().dump(project) for project in session.scalars(
            select(Project).where(Project.name.in_(list(ours))))}
    assert ours == expected


def test_timestamps_read_the_same_where_the_server_writes_dates_in_another_style(backend, fleet, client_as,
                                                                                   listing_url):
    """The listings read PostgreSQL's timestamps as its text (robin.volumes.listing.utc_text), which a DateStyle
    other than ISO would change: robin's sessions keep to ISO whatever the server or database says."""
    from sqlalchemy import create_engine, text

    from robin.db import normalize_url

    if backend == "sqlite":
        pytest.skip("SQLite's timestamps are the text SQLAlchemy stored")
    admin = create_engine(normalize_url(listing_url), isolation_level="AUTOCOMMIT")
    database = admin.url.database
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" SET DateStyle TO \'SQL, DMY\''))
        db.engine.dispose()  # new sessions, in the database's style now
        with db.read_connection() as connection:
            assert connection.scalar(text("SHOW DateStyle")) == "ISO, DMY"
        test_volume_listing_items_are_what_the_schema_writes(fleet, client_as, "rbd-images", False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" RESET DateStyle'))
        admin.dispose()
        db.engine.dispose()
