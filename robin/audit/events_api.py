"""`GET /api/v2/audit/events`: the audit trail, filtered and paged (admins, auditors; members: their project's)."""
from __future__ import annotations

from datetime import UTC

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from robin.audit import events
from robin.audit.models import AuditEvent
from robin.pagination import page_response
from robin.schemas import CEPH_NAME, PROJECT_NAME, PageArgs, PageSchema

blp = Blueprint("audit-events", __name__, url_prefix="/api/v2/audit",
                description="The audit trail: who changed what, and how it ended")
COLUMN = AuditEvent.__table__.c
TIME = {"format": "iso"}


class UtcTime(fields.AwareDateTime):
    """An RFC 3339 time with its zone, as UTC: a time near year 1 or 9999 in another zone has no UTC datetime."""

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError as exc:
            raise ValidationError("is out of the range of times (years 1 to 9999, in UTC)") from exc


class EventArgs(PageArgs):
    project = fields.String(validate=PROJECT_NAME, metadata={
        "description": "only this project's events (a member token sees only its own project's anyway)"})
    actor = fields.String(validate=validate.Length(min=1, max=COLUMN.actor.type.length), metadata={
        "description": "only this actor's, as events name it (`token:<id>:<name>`, `anonymous`)"})
    action = fields.String(validate=validate.Length(min=1, max=COLUMN.action.type.length), metadata={
        "description": "only this action, as events name it (`POST /api/v2/projects/<project>/rbd-images`)"})
    outcome = fields.String(validate=validate.OneOf(events.OUTCOMES), metadata={
        "description": "success, failure, or pending (a change whose outcome is not decided yet)"})
    target = fields.String(validate=CEPH_NAME, metadata={  # an id (a uuid) is such a name too
        "description": "a volume's or snapshot's name (the events whose path names it, and the creates that "
                       "named it) or id (that volume's or snapshot's, in its project)"})
    since = UtcTime(**TIME, metadata={"description": "RFC 3339: events at or after this time"})
    until = UtcTime(**TIME, metadata={"description": "RFC 3339: events before this time"})

    @validates_schema
    def _a_range(self, data, **_kwargs):
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise ValidationError("must be later than since", field_name="until")


class AuditEventSchema(Schema):
    id = fields.Integer()
    at = fields.DateTime(**TIME)
    actor = fields.String(metadata={"description": "`token:<id>:<name>`, or `anonymous`"})
    action = fields.String(metadata={"description": "the request's method and route"})
    target = fields.String(metadata={"description": "the request's path"})
    project = fields.String(allow_none=True, metadata={"description": "the project the path named"})
    outcome = fields.String(metadata={"description": "success, failure or pending"})
    status_code = fields.Integer(metadata={"description": "the response's status; 0 while pending"})
    error_code = fields.String(allow_none=True)
    request_id = fields.String()
    details = fields.Dict(metadata={"description": "the request's body, secrets redacted, bounded"})


class AuditEventPageSchema(PageSchema):
    items = fields.List(fields.Nested(AuditEventSchema))


@blp.route("/events")
class AuditEvents(MethodView):
    @blp.arguments(EventArgs, location="query")
    @blp.response(200, AuditEventPageSchema)
    def get(self, args):
        """The audit events this token sees, newest first, filtered by project, actor, action, outcome, target
        and time (`since` inclusive, `until` exclusive); one indexed query a page."""
        return page_response(events.page(g.identity, args, args["limit"], args["cursor"]))
