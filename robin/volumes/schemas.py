from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates

from robin import config
from robin.config import RBD_FEATURES
from robin.schemas import CEPH_NAME, PageSchema, byte_count

METADATA_KEY = validate.Regexp(r"^(?!robin\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$",
                               error="keys are 1-128 letters, digits, '.', '_', '/' or '-'; 'robin.' is reserved")
FEATURE_NEEDS = {"object-map": "exclusive-lock", "fast-diff": "object-map"}


def _check_size(value: int) -> None:
    maximum = config.current().max_image_bytes
    if value > maximum:
        raise ValidationError(f"must be at most {maximum} bytes (ROBIN_MAX_IMAGE_BYTES)")


class RbdImageCreateSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME)
    size_bytes = byte_count(minimum=1, required=True)
    pool = fields.String(validate=CEPH_NAME)
    cluster = fields.String(validate=CEPH_NAME)
    features = fields.List(fields.String(validate=validate.OneOf(RBD_FEATURES)), validate=validate.Length(min=1))
    metadata = fields.Dict(keys=fields.String(validate=METADATA_KEY),
                           values=fields.String(validate=validate.Length(max=4096)),
                           validate=validate.Length(max=64))

    @validates("size_bytes")
    def _size(self, value, **_):
        _check_size(value)

    @validates("features")
    def _features(self, value, **_):
        missing = [f"{feature} needs {need}" for feature, need in FEATURE_NEEDS.items()
                   if feature in value and need not in value]
        if missing:
            raise ValidationError("; ".join(missing))


class RbdImagePatchSchema(Schema):
    size_bytes = byte_count(minimum=1, required=True)
    allow_shrink = fields.Boolean(load_default=False)

    @validates("size_bytes")
    def _size(self, value, **_):
        _check_size(value)


class RbdImageGetArgs(Schema):
    with_used = fields.Boolean(load_default=False, metadata={"description": "measure used_bytes with fast-diff"})


class RbdImageSchema(Schema):
    id = fields.String()
    name = fields.String()
    project = fields.String(attribute="project.name")
    cluster = fields.String(attribute="cluster.name")
    pool = fields.String()
    size_bytes = fields.Integer()
    provisioned_bytes = fields.Integer(attribute="reserved_bytes")
    used_bytes = fields.Integer(metadata={"description": "allocated bytes; only with ?with_used=true"})
    features = fields.List(fields.String())
    metadata = fields.Dict(attribute="image_metadata")
    state = fields.Function(lambda image: image.state.value)
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")


class RbdImagePageSchema(PageSchema):
    items = fields.List(fields.Nested(RbdImageSchema))
