"""`GET /api/v2/projects/{p}/usage/history` (the project's members, auditors, admins) and
`GET /api/v2/audit/usage/forecast` (auditors, admins): usage over time, and when each project will be full."""
from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, post_load, validate

from robin import config
from robin.audit import forecast, history, usage
from robin.audit.events_api import UtcTime
from robin.db import utcnow

blp = Blueprint("usage-history", __name__, url_prefix="/api/v2",
                description="Usage over time, and when each project reaches its quota")
TIME = {"format": "iso"}
LONGEST_STEP = 366 * 86400


class HistoryArgs(Schema):
    since = UtcTime(**TIME, metadata={"description": "RFC 3339: samples at or after this time (default: a week "
                                                     "before until)"})
    until = UtcTime(**TIME, metadata={"description": "RFC 3339: samples before this time (default: now)"})
    step = fields.Integer(validate=validate.Range(min=history.MIN_STEP, max=LONGEST_STEP), metadata={
        "description": f"seconds a point averages (default: the whole minutes that make at most "
                       f"{history.AUTO_POINTS} points); at most {history.MAX_POINTS} points a request"})

    @post_load
    def _a_range(self, data, **_kwargs):
        until = data.get("until") or utcnow()
        try:
            since = data.get("since") or until - history.DEFAULT_RANGE
        except OverflowError as exc:  # an until in the first week of year 1
            raise ValidationError("is too early to look a week back from: give since", field_name="until") from exc
        if since >= until:
            raise ValidationError("must be later than since", field_name="until")
        step = data.get("step") or history.auto_step(since, until)
        points = (until - since).total_seconds() / step
        if points > history.MAX_POINTS:
            least = history.auto_step(since, until, history.MAX_POINTS)
            raise ValidationError(f"makes {points:.0f} points, more than {history.MAX_POINTS}: ask a step of at "
                                  f"least {least} seconds, or a shorter range", field_name="step")
        return {"since": since, "until": until, "step": step}


class HistoryPointSchema(Schema):
    at = fields.DateTime(**TIME, metadata={"description": "the start of the step this point averages"})
    provisioned_bytes = fields.Integer(metadata={"description": "bytes promised to live volumes (mean)"})
    used_bytes = fields.Integer(metadata={"description": "bytes the measured volumes occupy in Ceph (mean)"})
    volumes = fields.Integer(metadata={"description": "live volumes (mean, rounded)"})
    quota_bytes = fields.Integer(metadata={"description": "the byte quota at the step's last sample"})
    samples = fields.Integer(metadata={"description": "stored samples averaged (raw, hourly or daily means)"})


class HistorySchema(Schema):
    project = fields.String()
    since = fields.DateTime(**TIME)
    until = fields.DateTime(**TIME)
    step_seconds = fields.Integer()
    retention_days = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "raw samples are kept this many days, then hourly means, then daily means"})
    points = fields.List(fields.Nested(HistoryPointSchema), metadata={"description": "oldest first; a step with "
                                                                                    "no sample has no point"})


@blp.route("/projects/<project>/usage/history")
class ProjectUsageHistory(MethodView):
    @blp.arguments(HistoryArgs, location="query")
    @blp.response(200, HistorySchema)
    def get(self, args, project):
        """The project's provisioned, used and quota bytes and volumes over time, from the samples each usage
        refresh stores (raw for ROBIN_USAGE_HISTORY_RAW_DAYS, then hourly, then daily means), averaged per
        step; no Ceph call."""
        return history.project_history(g.identity, project, args["since"], args["until"], args["step"])


class ForecastArgs(Schema):
    window_days = fields.Integer(validate=validate.Range(min=1, max=3660), metadata={
        "description": "days of history to fit the growth rates to (default: ROBIN_USAGE_FORECAST_DAYS)"})


class FigureForecastSchema(Schema):
    bytes = fields.Integer(allow_none=True, metadata={"description": "at the newest sample"})
    growth_bytes_per_day = fields.Float(allow_none=True, metadata={
        "description": "the least-squares slope over the window; negative: shrinking"})
    full_at = fields.DateTime(allow_none=True, **TIME, metadata={
        "description": "when it reaches the quota at that rate (the newest sample's time if it already has); "
                       "null: never, see reason"})
    seconds_left = fields.Float(allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": f"why full_at is null: one of "
                                                                     f"{list(forecast.REASONS)}"})


class ProjectForecastSchema(Schema):
    project = fields.String()
    quota_bytes = fields.Integer()
    samples = fields.Integer(metadata={"description": "samples in the window"})
    provisioned = fields.Nested(FigureForecastSchema)
    used = fields.Nested(FigureForecastSchema)
    full_at = fields.DateTime(allow_none=True, **TIME, metadata={"description": "the sooner of the two"})
    seconds_left = fields.Float(allow_none=True)


class ForecastSchema(Schema):
    generated_at = fields.DateTime(**TIME)
    window_days = fields.Integer()
    projects = fields.List(fields.Nested(ProjectForecastSchema), metadata={
        "description": "soonest full first; those never full at their current rate last, by name"})


@blp.route("/audit/usage/forecast")
class UsageForecast(MethodView):
    @blp.arguments(ForecastArgs, location="query")
    @blp.response(200, ForecastSchema)
    def get(self, args):
        """Per project, the growth rate of provisioned and used bytes (a least-squares line through the usage
        history over the window) and the date each reaches the byte quota at that rate; auditors and admins."""
        usage.require_auditor(g.identity)
        return forecast.report(args.get("window_days") or config.current().usage_forecast_days)
