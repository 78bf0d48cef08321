"""`GET /api/v2/audit/drift`: what differs between robin's database and Ceph (auditors, admins)."""
from __future__ import annotations

from datetime import timedelta

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from robin.audit import drift

# Ten years: older than anything robin has left in a transitional state, and `now - older_than` stays a date
# (a larger timedelta overflows).
MAX_OLDER_THAN_S = 10 * 366 * 24 * 3600

blp = Blueprint("audit-drift", __name__, url_prefix="/api/v2/audit",
                description="Drift between the database and Ceph, for storage admins")


class DriftArgs(Schema):
    older_than = fields.Float(load_default=drift.DEFAULT_OLDER_THAN.total_seconds(),
                              validate=validate.Range(min=0, max=MAX_OLDER_THAN_S),
                              metadata={"description": "seconds: rows in a transitional state younger than this "
                                                       "are left out (a request may be under way)"})
    kind = fields.List(fields.String(validate=validate.OneOf(drift.KINDS)), load_default=None,
                       metadata={"description": "only findings of these kinds (repeat the parameter)"})
    full = fields.Boolean(load_default=False, metadata={
        "description": "admins: open every RBD image (a cost that grows with the pools) instead of at most "
                       "ROBIN_DRIFT_OPENS per pool, the changed ones first"})


class FindingSchema(Schema):
    kind = fields.String(metadata={"description": f"one of {list(drift.KINDS)}"})
    project = fields.String(allow_none=True, metadata={"description": "the row's project, or the project "
                                                                      "directory an orphan sits in"})
    evidence = fields.Dict(metadata={"description": "where (cluster, pool or fs, name or path) and what was "
                                                    "found against what is recorded"})


class DriftSchema(Schema):
    findings = fields.List(fields.Nested(FindingSchema))
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "findings by kind"})
    errors = fields.List(fields.Dict(), metadata={"description": "places that could not be surveyed"})
    coverage = fields.Dict(metadata={"description": "RBD images listed, opened now, known unchanged from their "
                                                    "last check, and deferred (changed, past open_limit: their "
                                                    "size and snapshots are not reported this time)"})


@blp.route("/drift")
class Drift(MethodView):
    @blp.arguments(DriftArgs, location="query")
    @blp.response(200, DriftSchema)
    def get(self, args):
        """Survey every registered cluster (robin's pools and CephFS root) against the rows. A report,
        not a page: it is computed whole each time, opening at most ROBIN_DRIFT_OPENS RBD images a pool (those
        whose header changed since their last check first), so it is not paginated."""
        return drift.report_for(g.identity, timedelta(seconds=args["older_than"]), args["kind"], args["full"])
