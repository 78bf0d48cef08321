from __future__ import annotations

from marshmallow import Schema, fields, validate

from robin.auth.models import Role
from robin.schemas import PROJECT_NAME, PageSchema


class TokenCreateSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf([role.value for role in Role]), metadata={
        "description": "admin: everything; member: one project's volumes; auditor: read-only, every project; "
                       "metrics: /metrics only; node: a CSI node's CephFS credentials only"})
    project = fields.String(validate=PROJECT_NAME, metadata={"description": "a member token's project (only then)"})
    name = fields.String(load_default="", validate=validate.Length(max=128),
                         metadata={"description": "a label to recognise the token by [its role]"})
    expires_in = fields.String(validate=validate.Length(min=2, max=32), metadata={
        "description": "refused after this long: a number and a unit s, m, h, d or w (30d, 12h); at most 10 years "
                       "[never]"})


class TokenSchema(Schema):
    """A token as listed: never its secret nor the secret's hash."""
    id = fields.Integer()
    name = fields.String()
    role = fields.String()
    project = fields.String(allow_none=True)
    prefix = fields.String(metadata={"description": "the secret's first 12 characters, to tell tokens apart"})
    created_at = fields.DateTime(format="iso")
    expires_at = fields.DateTime(format="iso", allow_none=True)
    revoked_at = fields.DateTime(format="iso", allow_none=True)


class TokenCreatedSchema(TokenSchema):
    secret = fields.String(metadata={"description": "the token to send as 'Authorization: Bearer ...': shown in "
                                                    "this answer only (robin keeps its hash)"})


class TokenPageSchema(PageSchema):
    items = fields.List(fields.Nested(TokenSchema))
