"""The two volume collections of a project, `rbd-images` and `cephfs-paths`: one set of views,
bound to each kind with its own schemas."""
from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.schemas import PageArgs
from robin.snapshots import service as snapshots
from robin.snapshots.schemas import SnapshotCreateSchema, SnapshotPageSchema, SnapshotSchema, VolumeDeleteArgs
from robin.volumes import adoption, schemas, service
from robin.volumes.kinds import CEPHFS, RBD


def volume_blueprint(kind, collection: str, *, create_schema, patch_schema, item_schema, page_schema) -> Blueprint:
    blp = Blueprint(collection, __name__, url_prefix=f"/api/v2/projects/<project>/{collection}",
                    description=f"{kind.noun}s owned by a project")

    @blp.route("")
    class Collection(MethodView):
        @blp.arguments(schemas.VolumeListArgs, location="query")
        @blp.response(200, page_schema)
        def get(self, args, project):
            return service.list_page(g.identity, kind, project, args["limit"], args["cursor"], args["trashed"])

        @blp.arguments(create_schema)
        @blp.response(201, item_schema)
        def post(self, body, project):
            """Create (RBD: or clone, with `source`); the size counts against the project's quota."""
            if "source" in body:
                return snapshots.clone(g.identity, project, body)
            return service.create(g.identity, kind, project, body)

    @blp.route("/<name>")
    class Item(MethodView):
        @blp.arguments(schemas.VolumeGetArgs, location="query")
        @blp.response(200, item_schema)
        def get(self, args, project, name):
            return service.get(g.identity, kind, project, name, with_used=args["with_used"])

        @blp.arguments(patch_schema)
        @blp.response(200, item_schema)
        def patch(self, body, project, name):
            """Resize; growing checks the project's quota."""
            return service.resize(g.identity, kind, project, name, body["size_bytes"],
                                  allow_shrink=body.get("allow_shrink", False))

        @blp.arguments(VolumeDeleteArgs, location="query")
        @blp.response(204)
        def delete(self, args, project, name):
            """Move to the trash (restorable until purge_after); 409 while it has snapshots, unless
            ?with_snapshots=true; ?purge=true (admins) removes it at once."""
            service.delete(g.identity, kind, project, name, with_snapshots=args["with_snapshots"],
                           purge=args["purge"])

    @blp.route("/<name>/restore")
    class Restore(MethodView):
        @blp.response(200, item_schema)
        def post(self, project, name):
            """Bring it back from the trash before its purge time; its quota is reserved again."""
            return service.restore(g.identity, kind, project, name)

    if kind is RBD:
        @blp.route("/<name>/flatten")
        class Flatten(MethodView):
            @blp.response(200, item_schema)
            def post(self, project, name):
                """Copy the parent's blocks into a clone so that it stands alone."""
                return snapshots.flatten(g.identity, project, name)

    @blp.route("/<name>/snapshots")
    class Snapshots(MethodView):
        @blp.arguments(PageArgs, location="query")
        @blp.response(200, SnapshotPageSchema)
        def get(self, args, project, name):
            return snapshots.list_page(g.identity, kind, project, name, args["limit"], args["cursor"])

        @blp.arguments(SnapshotCreateSchema)
        @blp.response(201, SnapshotSchema)
        def post(self, body, project, name):
            """Take a snapshot; counts against the project's max_snapshots."""
            return snapshots.create(g.identity, kind, project, name, body["name"])

    @blp.route("/<name>/snapshots/<snapshot>")
    class SnapshotItem(MethodView):
        @blp.response(200, SnapshotSchema)
        def get(self, project, name, snapshot):
            return snapshots.get(g.identity, kind, project, name, snapshot)

        @blp.response(204)
        def delete(self, project, name, snapshot):
            snapshots.delete(g.identity, kind, project, name, snapshot)

    @blp.route("/<name>/snapshots/<snapshot>/rollback")
    class Rollback(MethodView):
        @blp.response(200, SnapshotSchema)
        def post(self, project, name, snapshot):
            """Roll the volume back to the snapshot (RBD images; refused while the image is in use)."""
            return snapshots.rollback(g.identity, kind, project, name, snapshot)

    return blp


rbd_images = volume_blueprint(
    RBD, "rbd-images", create_schema=schemas.RbdImageCreateSchema, patch_schema=schemas.RbdImagePatchSchema,
    item_schema=schemas.RbdImageSchema, page_schema=schemas.RbdImagePageSchema)
cephfs_paths = volume_blueprint(
    CEPHFS, "cephfs-paths", create_schema=schemas.CephfsPathCreateSchema, patch_schema=schemas.CephfsPathPatchSchema,
    item_schema=schemas.CephfsPathSchema, page_schema=schemas.CephfsPathPageSchema)


# `POST .../rbd-images:adopt` (a custom method, as in Google's API design guide): beside the
# collection, so the route lives on a blueprint of its own rooted at the project.
adoption_blp = Blueprint("adoption", __name__, url_prefix="/api/v2/projects/<project>",
                         description="Bring existing unmanaged RBD images and CephFS directories under robin (admins)")


def _adopt_route(kind, collection: str, adopt_schema, item_schema) -> None:
    @adoption_blp.route(f"/{collection}:adopt", endpoint=f"adopt-{collection}")
    class Adopt(MethodView):
        @adoption_blp.arguments(adopt_schema)
        @adoption_blp.response(201, item_schema)
        def post(self, body, project):
            """Adopt an orphan: it becomes an available volume of the project; its size (and its
            snapshots, as snapshot rows) count against the quota, all or nothing."""
            return adoption.adopt(g.identity, kind, project, body)


_adopt_route(RBD, "rbd-images", schemas.RbdImageAdoptSchema, schemas.RbdImageSchema)
_adopt_route(CEPHFS, "cephfs-paths", schemas.CephfsPathAdoptSchema, schemas.CephfsPathSchema)
