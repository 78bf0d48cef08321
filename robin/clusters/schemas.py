from __future__ import annotations

from marshmallow import Schema, fields, validate

from robin.schemas import CEPH_NAME


class ClusterCreateSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME)
    conf_path = fields.String(required=True, validate=validate.Regexp(r"^/", error="must be an absolute path"))
    client_id = fields.String(load_default="admin", validate=CEPH_NAME)


class ClusterSchema(Schema):
    name = fields.String()
    conf_path = fields.String()
    client_id = fields.String()
    is_default = fields.Boolean()
    created_at = fields.DateTime(format="iso")
