from __future__ import annotations

from marshmallow import Schema, ValidationError, fields

from robin.schemas import CEPH_NAME, PageSchema

# robin's own temporary snapshots (a clone of an image's current state) are named so; the reconciler removes them.
RESERVED_PREFIX = "robin-clone-"


def _not_reserved(name: str) -> None:
    if name.startswith(RESERVED_PREFIX):
        raise ValidationError(f"names starting with {RESERVED_PREFIX!r} are reserved for robin")


class SnapshotCreateSchema(Schema):
    name = fields.String(required=True, validate=[CEPH_NAME, _not_reserved])


class SnapshotSchema(Schema):
    id = fields.String()
    name = fields.String()
    volume = fields.String(attribute="volume.name")
    size_bytes = fields.Integer(metadata={"description": "the volume's size (or quota) when it was taken"})
    state = fields.Function(lambda snapshot: snapshot.state.value)
    created_at = fields.DateTime(format="iso")


class SnapshotPageSchema(PageSchema):
    items = fields.List(fields.Nested(SnapshotSchema))


class VolumeDeleteArgs(Schema):
    with_snapshots = fields.Boolean(load_default=False, metadata={"description": "delete its snapshots too"})
    purge = fields.Boolean(load_default=False, metadata={
        "description": "remove it at once instead of moving it to the trash (admins only)"})
