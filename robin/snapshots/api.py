"""Snapshots of a volume, `.../<collection>/<name>/snapshots`: one blueprint, nested in both volume
collections (robin.volumes.api), which hand their kind to every view; and `/api/v2/snapshots`, the snapshots of
every volume a token sees in one listing (so a client finds one by name, or lists them all, in a request a page)."""
from __future__ import annotations

from flask import g, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.pagination import Page, page_response
from robin.schemas import PageArgs
from robin.snapshots import service
from robin.snapshots.schemas import (
    SnapshotCreateSchema,
    SnapshotListArgs,
    SnapshotListingPageSchema,
    SnapshotPageSchema,
    SnapshotSchema,
)

blp = Blueprint("snapshots", __name__, url_prefix="/<name>/snapshots")
# Made once: given a class, webargs makes a schema instance per request.
CREATE_ARGS = SnapshotCreateSchema()


@blp.route("")
class Snapshots(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, SnapshotPageSchema)
    def get(self, args, project, name, kind):
        page = service.list_page(g.identity, kind, project, name, args["limit"], args["cursor"])
        return page_response(Page([service.snapshot_item(snapshot) for snapshot in page.items], page.next_cursor))

    @blp.arguments(CREATE_ARGS)
    @blp.response(201, SnapshotSchema)
    def post(self, body, project, name, kind):
        """Take a snapshot; counts against the project's max_snapshots."""
        # Written as SnapshotSchema would (tests check it), without marshmallow's walk over its fields.
        return jsonify(service.snapshot_item(service.create(g.identity, kind, project, name, body["name"]))), 201


@blp.route("/<snapshot>")
class SnapshotItem(MethodView):
    @blp.response(200, SnapshotSchema)
    def get(self, project, name, snapshot, kind):
        return service.get(g.identity, kind, project, name, snapshot)

    @blp.response(204)
    def delete(self, project, name, snapshot, kind):
        service.delete(g.identity, kind, project, name, snapshot)


@blp.route("/<snapshot>/rollback")
class Rollback(MethodView):
    @blp.response(200, SnapshotSchema)
    def post(self, project, name, snapshot, kind):
        """Roll the volume back to the snapshot (RBD images; refused while the image is in use)."""
        return service.rollback(g.identity, kind, project, name, snapshot)


listing = Blueprint("snapshot-listing", __name__, url_prefix="/api/v2/snapshots",
                    description="Snapshots across volumes and projects")


@listing.route("")
class AllSnapshots(MethodView):
    @listing.arguments(SnapshotListArgs, location="query")
    @listing.response(200, SnapshotListingPageSchema)
    def get(self, args):
        """The snapshots of every live volume of the projects this token sees (a member's: its project), in a
        stable order; filter by project, name (repeatable) and state."""
        return page_response(service.list_across(g.identity, args))
