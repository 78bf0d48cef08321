from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.audit import usage
from robin.audit.schemas import UsageArgs, UsageReportSchema
from robin.audit.service import audit_this_read

blp = Blueprint("audit-usage", __name__, url_prefix="/api/v2/audit", description="Usage reports for storage admins")


@blp.route("/usage")
class Usage(MethodView):
    @blp.arguments(UsageArgs, location="query")
    @blp.response(200, UsageReportSchema)
    def get(self, args):
        """Quota, provisioned and used bytes per cluster, pool, project (and volume); auditors and admins.
        Figures come from the last measurement (each says its age); ?refresh=true (admin) measures now."""
        if args["refresh"]:
            audit_this_read()  # a GET that sets Ceph measuring every volume: who asked is recorded
        return usage.report(g.identity, refresh_now=args["refresh"], with_volumes=args["volumes"], top=args["top"])
