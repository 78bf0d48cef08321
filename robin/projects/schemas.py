from __future__ import annotations

from marshmallow import Schema, fields

from robin.audit.schemas import UsageRefreshSchema
from robin.schemas import PROJECT_NAME, PageSchema, byte_count, count


class QuotaSchema(Schema):
    max_bytes = byte_count(required=True)
    max_volumes = count(required=True)
    max_snapshots = count(required=True)


class QuotaPatchSchema(Schema):
    max_bytes = byte_count()
    max_volumes = count()
    max_snapshots = count()


class ProjectCreateSchema(Schema):
    name = fields.String(required=True, validate=PROJECT_NAME)
    quota = fields.Nested(QuotaSchema, required=True)


class ProjectPatchSchema(Schema):
    quota = fields.Nested(QuotaPatchSchema, required=True)


class ProjectSchema(Schema):
    name = fields.String()
    quota = fields.Nested(QuotaSchema)
    created_at = fields.DateTime(format="iso")


class ProjectPageSchema(PageSchema):
    items = fields.List(fields.Nested(ProjectSchema))


class UsageArgs(Schema):
    refresh = fields.Boolean(load_default=False, metadata={
        "description": "measure the project's volumes in Ceph now, then answer (admin tokens only: a Ceph call "
                       "per volume); without it the answer comes from the last measurement"})


class UsageSchema(Schema):
    project = fields.String()
    quota = fields.Nested(QuotaSchema)
    provisioned_bytes = fields.Integer(metadata={"description": "bytes promised to live volumes (from the rows: "
                                                                "always current)"})
    used_bytes = fields.Integer(metadata={
        "description": "bytes the measured live volumes occupy in Ceph, as last measured (the maintenance loop "
                       "re-measures stale figures); volumes never measured count 0 here and "
                       "in unmeasured_volumes"})
    measured_at = fields.DateTime(format="iso", allow_none=True, metadata={
        "description": "when the oldest figure in used_bytes was measured; null when no volume is measured yet"})
    age_seconds = fields.Float(allow_none=True, metadata={"description": "seconds since measured_at"})
    unmeasured_volumes = fields.Integer(metadata={
        "description": "live volumes with no figure yet (new since the last measurement): not in used_bytes"})
    refresh = fields.Nested(UsageRefreshSchema, allow_none=True, metadata={
        "description": "what ?refresh=true measured; null without it"})
    volumes = fields.Integer()
    remaining_bytes = fields.Integer()
    remaining_volumes = fields.Integer()
