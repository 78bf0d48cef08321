"""Wayne's shapes: sizes in MiB for volumes (what its client sends), in bytes for snapshots."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from robin import config
from robin.errors import InvalidInput
from robin.schemas import CEPH_NAME
from robin.snapshots.schemas import SnapshotCreateSchema
from robin.volumes.models import RbdImage

MiB = 2**20
TYPES = ("rbd", "cephfs")


class ImageListArgs(Schema):
    type = fields.String(load_default="all", validate=validate.OneOf(("all", *TYPES)))


class ImageTypeArgs(Schema):
    type = fields.String(required=True, validate=validate.OneOf(TYPES))


def _at_most_the_maximum(size_mib: int) -> None:
    maximum = config.current().max_volume_bytes // MiB
    if size_mib > maximum:
        raise ValidationError(f"must be at most {maximum} MiB (ROBIN_MAX_VOLUME_BYTES)")


class ImageCreateSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME)
    size = fields.Integer(required=True, strict=True, validate=[validate.Range(min=1), _at_most_the_maximum],
                          metadata={"description": "MiB"})


def _type(volume) -> str:
    return "rbd" if isinstance(volume, RbdImage) else "cephfs"


def _whole_mib(volume) -> int:
    # Rounded up, so that a volume made through /api/v2 with a size that is not whole MiB never shows as 0.
    return -(-volume.size_bytes // MiB)


class ImageSchema(Schema):
    id = fields.String()
    name = fields.String()
    type = fields.Function(_type)
    size = fields.Function(_whole_mib, metadata={"description": "MiB, rounded up; size_bytes is exact"})
    size_bytes = fields.Integer(metadata={"description": "an RBD image's size, a CephFS path's quota"})
    project = fields.String(attribute="project.name")
    state = fields.Function(lambda volume: volume.state.value)
    pool = fields.String(metadata={"description": "RBD images"})
    fs = fields.String(attribute="fs_name", metadata={"description": "CephFS paths"})
    path = fields.String(metadata={"description": "CephFS paths"})
    created_at = fields.DateTime(format="iso")


class ImageListSchema(Schema):
    images = fields.List(fields.Nested(ImageSchema))


class SnapSchema(Schema):
    id = fields.String()
    name = fields.String()
    size = fields.Integer(attribute="size_bytes", metadata={"description": "bytes: the image's size when taken"})
    state = fields.Function(lambda snapshot: snapshot.state.value)
    created_at = fields.DateTime(format="iso")


class SnapListSchema(Schema):
    snaps = fields.List(fields.Nested(SnapSchema))


class DeletedSnapsSchema(Schema):
    deleted = fields.List(fields.Nested(SnapSchema))


def snapshot_name(version: str) -> str:
    """A new snapshot's name arrives in the URL: checked by the rules of /api/v2's request body."""
    try:
        return SnapshotCreateSchema().load({"name": version})["name"]
    except ValidationError as exc:
        messages = exc.messages_dict.get("name", [])
        raise InvalidInput(f"invalid input: version: {' '.join(messages)}",
                           details={"fields": {"version": messages}}) from exc


class DeviceActivateSchema(Schema):
    """What Wayne sends to activate a volume: the SFTP user and its password (robin keeps only a hash)."""

    user = fields.String(required=True)
    password = fields.String(required=True, load_only=True)


class DeviceStatusSchema(Schema):
    status = fields.List(fields.String(), metadata={
        "description": "any of Mount, LoginForbidden, Verifying, VerifyOk, VerifyFailed; [] when not activated"})
    msg = fields.String()
