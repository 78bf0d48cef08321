from __future__ import annotations

from marshmallow import Schema, fields

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


class UsageSchema(Schema):
    project = fields.String()
    quota = fields.Nested(QuotaSchema)
    provisioned_bytes = fields.Integer()
    used_bytes = fields.Integer()
    volumes = fields.Integer()
    remaining_bytes = fields.Integer()
    remaining_volumes = fields.Integer()
