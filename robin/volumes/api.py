"""The two volume collections of a project, `rbd-images` and `cephfs-paths`, each with its own
schemas; their snapshots are robin.snapshots.api, nested in both. Adoption sits beside them, and
`/api/v2/volumes`, the volumes of both kinds in every project a token sees, in one listing."""
from __future__ import annotations

from flask import g, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.pagination import page_response
from robin.snapshots import api as snapshots_api
from robin.snapshots import service as snapshots
from robin.snapshots.schemas import VolumeDeleteArgs
from robin.volumes import adoption, authorization, cephfs_clones, schemas, service
from robin.volumes.kinds import CEPHFS, RBD

PROJECT_PREFIX = "/api/v2/projects/<project>"
# The read routes' query arguments as schema instances, made once: given a class, webargs makes an instance per
# request, which cost a listing more than decoding its cursor.
LIST_ARGS, GET_ARGS, LISTING_ARGS = schemas.VolumeListArgs(), schemas.VolumeGetArgs(), schemas.VolumeListingArgs()
# The write routes' too: a schema instance per request cost a create about a tenth of robin's own Python.
RBD_CREATE, RBD_PATCH = schemas.RbdImageCreateSchema(), schemas.RbdImagePatchSchema()
CEPHFS_CREATE, CEPHFS_PATCH = schemas.CephfsPathCreateSchema(), schemas.CephfsPathPatchSchema()
DELETE_ARGS, PURGE_ARGS = VolumeDeleteArgs(), schemas.VolumePurgeArgs()

# --- rbd-images ---------------------------------------------------------------------------------

rbd_images = Blueprint("rbd-images", __name__, url_prefix=f"{PROJECT_PREFIX}/rbd-images",
                       description=f"{RBD.noun}s owned by a project")


@rbd_images.route("")
class RbdImageCollection(MethodView):
    @rbd_images.arguments(LIST_ARGS, location="query")
    @rbd_images.response(200, schemas.RbdImagePageSchema)
    def get(self, args, project):
        return page_response(service.list_page(g.identity, RBD, project, args["limit"], args["cursor"],
                                               args["trashed"]))

    @rbd_images.arguments(RBD_CREATE)
    @rbd_images.response(201, schemas.RbdImageSchema)
    def post(self, body, project):
        """Create (RBD: or clone, with `source`); the size counts against the project's quota."""
        if "source" in body:
            return snapshots.clone(g.identity, project, body)
        return service.create(g.identity, RBD, project, body)


@rbd_images.route("/<name>")
class RbdImageItem(MethodView):
    @rbd_images.arguments(GET_ARGS, location="query")
    @rbd_images.response(200, schemas.RbdImageSchema)
    def get(self, args, project, name):
        if args["with_used"]:  # measured in Ceph: the volume's row, then its used bytes
            return service.get(g.identity, RBD, project, name, with_used=True)
        return jsonify(service.get_item(g.identity, RBD, project, name))  # written as the schema would

    @rbd_images.arguments(RBD_PATCH)
    @rbd_images.response(200, schemas.RbdImageSchema)
    def patch(self, body, project, name):
        """Resize; growing checks the project's quota."""
        return service.resize(g.identity, RBD, project, name, body["size_bytes"],
                              allow_shrink=body.get("allow_shrink", False))

    @rbd_images.arguments(DELETE_ARGS, location="query")
    @rbd_images.response(204)
    def delete(self, args, project, name):
        """Move to the trash (restorable until purge_after); 409 while it has snapshots, unless
        ?with_snapshots=true; ?purge=true (admins) removes it at once."""
        service.delete(g.identity, RBD, project, name, with_snapshots=args["with_snapshots"], purge=args["purge"])


@rbd_images.route("/<name>/restore")
class RbdImageRestore(MethodView):
    @rbd_images.response(200, schemas.RbdImageSchema)
    def post(self, project, name):
        """Bring it back from the trash before its purge time; its quota is reserved again."""
        return service.restore(g.identity, RBD, project, name)


@rbd_images.route("/<name>/purge")
class RbdImagePurge(MethodView):
    @rbd_images.arguments(PURGE_ARGS, location="query")
    @rbd_images.response(204)
    def post(self, args, project, name):
        """Purge one volume of the trash now, before its purge_after (admins): the one of this name with ?id= (from
        the listing with ?trashed=true). Gone for good: it cannot be restored afterwards."""
        service.purge_now(g.identity, RBD, project, name, args["id"])


@rbd_images.route("/<name>/flatten")
class RbdImageFlatten(MethodView):
    @rbd_images.response(200, schemas.RbdImageSchema)
    def post(self, project, name):
        """Copy the parent's blocks into a clone so that it stands alone."""
        return snapshots.flatten(g.identity, project, name)


rbd_images.register_blueprint(snapshots_api.blp, url_defaults={"kind": RBD})

# --- cephfs-paths -------------------------------------------------------------------------------

cephfs_paths = Blueprint("cephfs-paths", __name__, url_prefix=f"{PROJECT_PREFIX}/cephfs-paths",
                         description=f"{CEPHFS.noun}s owned by a project")


@cephfs_paths.route("")
class CephfsPathCollection(MethodView):
    @cephfs_paths.arguments(LIST_ARGS, location="query")
    @cephfs_paths.response(200, schemas.CephfsPathPageSchema)
    def get(self, args, project):
        return page_response(service.list_page(g.identity, CEPHFS, project, args["limit"], args["cursor"],
                                               args["trashed"]))

    @cephfs_paths.arguments(CEPHFS_CREATE)
    @cephfs_paths.response(201, schemas.CephfsPathSchema)
    def post(self, body, project):
        """Create (or, with `source`, clone a subvolume's snapshot: the answer is `creating` until the mgr has
        copied it); the quota counts against the project's quota."""
        if "source" in body:
            return cephfs_clones.clone(g.identity, project, body)
        return service.create(g.identity, CEPHFS, project, body)


@cephfs_paths.route("/<name>")
class CephfsPathItem(MethodView):
    @cephfs_paths.arguments(GET_ARGS, location="query")
    @cephfs_paths.response(200, schemas.CephfsPathSchema)
    def get(self, args, project, name):
        if args["with_used"]:  # measured in Ceph: the volume's row, then its used bytes
            return service.get(g.identity, CEPHFS, project, name, with_used=True)
        item = service.get_item(g.identity, CEPHFS, project, name)  # written as the schema would
        if item["state"] in cephfs_clones.UNSETTLED:
            cloned = cephfs_clones.get(g.identity, project, name)  # finished now if the mgr is done
            if cloned is not None:
                return cloned
        return jsonify(item)

    @cephfs_paths.arguments(CEPHFS_PATCH)
    @cephfs_paths.response(200, schemas.CephfsPathSchema)
    def patch(self, body, project, name):
        """Resize; growing checks the project's quota."""
        return service.resize(g.identity, CEPHFS, project, name, body["size_bytes"],
                              allow_shrink=body.get("allow_shrink", False))

    @cephfs_paths.arguments(DELETE_ARGS, location="query")
    @cephfs_paths.response(204)
    def delete(self, args, project, name):
        """Move to the trash (restorable until purge_after); 409 while it has snapshots, unless
        ?with_snapshots=true; ?purge=true (admins) removes it at once."""
        service.delete(g.identity, CEPHFS, project, name, with_snapshots=args["with_snapshots"],
                       purge=args["purge"])


@cephfs_paths.route("/<name>/restore")
class CephfsPathRestore(MethodView):
    @cephfs_paths.response(200, schemas.CephfsPathSchema)
    def post(self, project, name):
        """Bring it back from the trash before its purge time; its quota is reserved again."""
        return service.restore(g.identity, CEPHFS, project, name)


@cephfs_paths.route("/<name>/purge")
class CephfsPathPurge(MethodView):
    @cephfs_paths.arguments(PURGE_ARGS, location="query")
    @cephfs_paths.response(204)
    def post(self, args, project, name):
        """Purge one volume of the trash now, before its purge_after (admins): the one of this name with ?id= (from
        the listing with ?trashed=true). Gone for good: it cannot be restored afterwards."""
        service.purge_now(g.identity, CEPHFS, project, name, args["id"])


@cephfs_paths.route("/<name>/authorize")
class CephfsPathAuthorize(MethodView):
    @cephfs_paths.response(200, schemas.NodeCredentialsSchema)
    def post(self, project, name):
        """The cephx user a host mounts the path with (admin and node tokens): its caps reach this path only. Made
        on the first call, the same user and key on every later one; removed when the path is deleted."""
        return authorization.node_credentials(g.identity, project, name)


cephfs_paths.register_blueprint(snapshots_api.blp, url_defaults={"kind": CEPHFS})

# --- adoption -----------------------------------------------------------------------------------

# `POST .../rbd-images:adopt` (a custom method, as in Google's API design guide): beside the
# collection, so the route lives on a blueprint of its own rooted at the project.
adoption_blp = Blueprint("adoption", __name__, url_prefix=PROJECT_PREFIX,
                         description="Bring existing unmanaged RBD images and CephFS directories under robin (admins)")


@adoption_blp.route("/rbd-images:adopt", endpoint="adopt-rbd-images")
class AdoptRbdImage(MethodView):
    @adoption_blp.arguments(schemas.RbdImageAdoptSchema)
    @adoption_blp.response(201, schemas.RbdImageSchema)
    def post(self, body, project):
        """Adopt an orphan: it becomes an available volume of the project; its size (and its
        snapshots, as snapshot rows) count against the quota, all or nothing."""
        return adoption.adopt(g.identity, RBD, project, body)


@adoption_blp.route("/cephfs-paths:adopt", endpoint="adopt-cephfs-paths")
class AdoptCephfsPath(MethodView):
    @adoption_blp.arguments(schemas.CephfsPathAdoptSchema)
    @adoption_blp.response(201, schemas.CephfsPathSchema)
    def post(self, body, project):
        """Adopt an orphan: it becomes an available volume of the project; its size (and its
        snapshots, as snapshot rows) count against the quota, all or nothing."""
        return adoption.adopt(g.identity, CEPHFS, project, body)


# --- every volume, both kinds -------------------------------------------------------------------

listing = Blueprint("volume-listing", __name__, url_prefix="/api/v2/volumes",
                    description="Volumes of both kinds across projects")


@listing.route("")
class AllVolumes(MethodView):
    @listing.arguments(LISTING_ARGS, location="query")
    @listing.response(200, schemas.VolumeListingPageSchema)
    def get(self, args):
        """The live volumes of the projects this token sees (a member's: its project), or of one `project`, RBD
        images and CephFS paths together in a stable order: a page costs one indexed query per kind at any
        depth."""
        return page_response(service.list_across(g.identity, args.get("project"), args["limit"], args["cursor"]))
