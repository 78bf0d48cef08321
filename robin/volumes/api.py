from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.schemas import PageArgs
from robin.volumes import service
from robin.volumes.schemas import (
    RbdImageCreateSchema,
    RbdImageGetArgs,
    RbdImagePageSchema,
    RbdImagePatchSchema,
    RbdImageSchema,
)

blp = Blueprint("rbd_images", __name__, url_prefix="/api/v2/projects/<project>/rbd-images",
                description="RBD images owned by a project")


@blp.route("")
class RbdImages(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, RbdImagePageSchema)
    def get(self, args, project):
        return service.list_page(g.identity, project, args["limit"], args["cursor"])

    @blp.arguments(RbdImageCreateSchema)
    @blp.response(201, RbdImageSchema)
    def post(self, body, project):
        """Create an RBD image; its size counts against the project's quota."""
        return service.create(g.identity, project, body)


@blp.route("/<name>")
class RbdImageItem(MethodView):
    @blp.arguments(RbdImageGetArgs, location="query")
    @blp.response(200, RbdImageSchema)
    def get(self, args, project, name):
        return service.get(g.identity, project, name, with_used=args["with_used"])

    @blp.arguments(RbdImagePatchSchema)
    @blp.response(200, RbdImageSchema)
    def patch(self, body, project, name):
        """Resize; growing checks the quota, shrinking needs allow_shrink."""
        return service.resize(g.identity, project, name, body["size_bytes"], body["allow_shrink"])

    @blp.response(204)
    def delete(self, project, name):
        service.delete(g.identity, project, name)
