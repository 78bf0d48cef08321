from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.audit.service import audit_this_read
from robin.pagination import page_response
from robin.projects import service
from robin.projects.schemas import (
    ProjectCreateSchema,
    ProjectPageSchema,
    ProjectPatchSchema,
    ProjectSchema,
    UsageArgs,
    UsageSchema,
)
from robin.schemas import PageArgs
from robin.volumes import service as volumes

blp = Blueprint("projects", __name__, url_prefix="/api/v2/projects", description="Projects (tenants) and quotas")


@blp.route("")
class Projects(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, ProjectPageSchema)
    def get(self, args):
        """List the projects this token may see."""
        return page_response(service.list_visible(g.identity, args["limit"], args["cursor"]))

    @blp.arguments(ProjectCreateSchema)
    @blp.response(201, ProjectSchema)
    def post(self, body):
        """Create a project with its quota (admin)."""
        return service.create(g.identity, body["name"], body["quota"])


@blp.route("/<project>")
class ProjectItem(MethodView):
    @blp.response(200, ProjectSchema)
    def get(self, project):
        return service.get(g.identity, project)

    @blp.arguments(ProjectPatchSchema)
    @blp.response(200, ProjectSchema)
    def patch(self, body, project):
        """Change the quota (admin); refused below what the project already uses."""
        return service.update_quota(g.identity, project, body["quota"])

    @blp.response(204)
    def delete(self, project):
        """Delete an empty project (admin); 409 while it owns volumes."""
        service.delete(g.identity, project)


@blp.route("/<project>/usage")
class ProjectUsage(MethodView):
    @blp.arguments(UsageArgs, location="query")
    @blp.response(200, UsageSchema)
    def get(self, args, project):
        """Quota, provisioned bytes (promised to volumes) and used bytes (allocated in Ceph, as last measured, with
        the measurement's time); ?refresh=true (admin) measures the project's volumes first."""
        if args["refresh"]:
            audit_this_read()  # a GET that sets Ceph measuring every volume of the project: who asked is recorded
        return volumes.project_usage(g.identity, project, refresh=args["refresh"])
