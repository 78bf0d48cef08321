from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.migration_records import service
from robin.migration_records.schemas import (
    MigrationRecordArgs,
    MigrationRecordCreateSchema,
    MigrationRecordPageSchema,
    MigrationRecordSchema,
)

blp = Blueprint("migrations", __name__, url_prefix="/api/v2/projects",
                description="What `robin migrate gluster` moved into a project's volumes, step by step")


@blp.route("/<project>/migrations")
class MigrationRecords(MethodView):
    @blp.arguments(MigrationRecordArgs, location="query")
    @blp.response(200, MigrationRecordPageSchema)
    def get(self, args, project):
        """The project's migration records, oldest first; filter by volume_kind and volume_name."""
        return service.history(g.identity, project, args)

    @blp.arguments(MigrationRecordCreateSchema)
    @blp.response(201, MigrationRecordSchema)
    def post(self, body, project):
        """Record a step of a volume's migration (members of the project, admins); audited."""
        return service.record(g.identity, project, body)
