from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from robin.schemas import CEPH_NAME, PROJECT_NAME, PageArgs, PageSchema
from robin.snapshots.models import SnapshotState

# robin's own temporary snapshots (a clone of an image's current state) are named so; the reconciler removes them.
RESERVED_PREFIX = "robin-clone-"
MAX_NAMES = 10  # names one listing filters by: a lookup, not a bulk query
LISTED_STATES = tuple(state.value for state in SnapshotState if state is not SnapshotState.DELETED)


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


class SnapshotListArgs(PageArgs):
    project = fields.String(validate=PROJECT_NAME, metadata={
        "description": "only this project's snapshots (a member token sees only its own project's anyway)"})
    name = fields.List(fields.String(validate=CEPH_NAME), validate=validate.Length(max=MAX_NAMES), metadata={
        "description": f"only snapshots of these names (repeat the parameter, up to {MAX_NAMES} names)"})
    state = fields.String(validate=validate.OneOf(LISTED_STATES), metadata={"description": "only those in this state"})


class SnapshotListingSchema(Schema):
    """A snapshot with the volume it is of, named as the volume APIs do."""

    id = fields.String()
    name = fields.String()
    project = fields.String()
    volume_kind = fields.String(metadata={"description": "rbd (an RBD image) or cephfs (a CephFS path)"})
    volume = fields.String(metadata={"description": "the volume's name"})
    size_bytes = fields.Integer(metadata={"description": "the volume's size (or quota) when it was taken"})
    state = fields.String()
    created_at = fields.DateTime(format="iso")


class SnapshotListingPageSchema(PageSchema):
    items = fields.List(fields.Nested(SnapshotListingSchema))
