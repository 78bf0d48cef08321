from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from robin import config
from robin.config import RBD_FEATURES
from robin.schemas import CEPH_NAME, PROJECT_NAME, PageArgs, PageSchema

METADATA_KEY = validate.Regexp(r"^(?!robin\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,127}\Z",
                               error="keys are 1-128 letters, digits, '.', '_', '/' or '-'; 'robin.' is reserved")
CREATED_FOR = validate.Regexp(r"^[a-z][a-z0-9-]{0,31}:[A-Za-z0-9._:/-]{1,200}\Z",
                              error="<kind>:<id>, e.g. k8s-claim:<uid>: a lowercase kind, ':', then letters, digits, "
                                    "'.', '_', ':', '/' or '-'")
FEATURE_NEEDS = {"object-map": "exclusive-lock", "fast-diff": "object-map"}


def _at_most_the_maximum(value: int) -> None:
    maximum = config.current().max_volume_bytes
    if value > maximum:
        raise ValidationError(f"must be at most {maximum} bytes (ROBIN_MAX_VOLUME_BYTES)")


def volume_size(**kwargs) -> fields.Integer:
    """A size in bytes: a strict positive integer no larger than ROBIN_MAX_VOLUME_BYTES. Loaded
    as `size_bytes` whatever the field is called on the wire (a CephFS path's is quota_bytes)."""
    return fields.Integer(strict=True, validate=[validate.Range(min=1), _at_most_the_maximum], **kwargs)


class VolumeSchema(Schema):
    """What every volume reports."""

    id = fields.String()
    name = fields.String()
    project = fields.String(attribute="project.name")
    cluster = fields.String(attribute="cluster.name")
    provisioned_bytes = fields.Integer(attribute="reserved_bytes")
    used_bytes = fields.Integer(metadata={"description": "allocated bytes; only with ?with_used=true"})
    state = fields.Function(lambda volume: volume.state.value)
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")
    deleted_at = fields.DateTime(format="iso", allow_none=True, metadata={
        "description": "set while in the trash, else null"})
    purge_after = fields.DateTime(format="iso", allow_none=True, metadata={
        "description": "when the trash purges it; null outside the trash"})
    created_for = fields.String(allow_none=True, metadata={
        "description": "what the volume was made for, as given at creation; null if nothing was given"})


class VolumeListArgs(PageArgs):
    trashed = fields.Boolean(load_default=False, metadata={
        "description": "list the volumes in the trash (restorable until purge_after) instead"})


class VolumePurgeArgs(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=36), metadata={
        "description": "the trashed volume's id, from the listing with ?trashed=true (the trash may hold several "
                       "volumes of a name)"})


class VolumeGetArgs(Schema):
    with_used = fields.Boolean(load_default=False, metadata={"description": "measure used_bytes in Ceph"})


# --- RBD images ---------------------------------------------------------------------------------

class CloneSourceSchema(Schema):
    image = fields.String(required=True, validate=CEPH_NAME, metadata={"description": "an image of the project"})
    snapshot = fields.String(validate=CEPH_NAME, metadata={
        "description": "one of its snapshots; without it, its current state (through a temporary snapshot)"})


class RbdImageCreateSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME)
    size_bytes = volume_size(metadata={"description": "required unless cloning; a clone defaults to its source's size"})
    source = fields.Nested(CloneSourceSchema, metadata={"description": "make a copy-on-write clone of this"})
    pool = fields.String(validate=CEPH_NAME)
    cluster = fields.String(validate=CEPH_NAME)
    features = fields.List(fields.String(validate=validate.OneOf(RBD_FEATURES)),
                           validate=validate.Length(min=1, max=len(RBD_FEATURES)))
    metadata = fields.Dict(keys=fields.String(validate=METADATA_KEY),
                           values=fields.String(validate=validate.Length(max=4096)),
                           validate=validate.Length(max=64))
    created_for = fields.String(validate=CREATED_FOR, metadata={
        "description": "what the volume is made for (e.g. k8s-claim:<uid>); set at creation only"})

    @validates_schema
    def _size_or_source(self, data, **_):
        if "size_bytes" not in data and "source" not in data:
            raise ValidationError("Missing data for required field.", field_name="size_bytes")

    @validates("features")
    def _features(self, value, **_):
        missing = [f"{feature} needs {need}" for feature, need in FEATURE_NEEDS.items()
                   if feature in value and need not in value]
        if missing:
            raise ValidationError("; ".join(missing))


class RbdImagePatchSchema(Schema):
    size_bytes = volume_size(required=True)
    allow_shrink = fields.Boolean(load_default=False)


class RbdImageSchema(VolumeSchema):
    pool = fields.String()
    size_bytes = fields.Integer()
    parent = fields.Method("_parent", metadata={"description": "for a clone: the image and snapshot it shares "
                                                               "blocks with, until it is flattened"})
    features = fields.List(fields.String())
    metadata = fields.Dict(attribute="image_metadata")

    def _parent(self, image):
        if image.parent_id is None:
            return None
        return {"image": image.parent_name, "snapshot": image.parent_snapshot}


class RbdImagePageSchema(PageSchema):
    items = fields.List(fields.Nested(RbdImageSchema))


# --- CephFS paths -------------------------------------------------------------------------------

class CephfsCloneSourceSchema(Schema):
    path = fields.String(required=True, validate=CEPH_NAME, metadata={
        "description": "the name of the project's CephFS path to clone (a subvolume)"})
    snapshot = fields.String(required=True, validate=CEPH_NAME, metadata={"description": "its snapshot to clone"})


class CephfsCloneSchema(Schema):
    source = fields.Nested(CephfsCloneSourceSchema)
    status = fields.String(metadata={"description": "the mgr's `fs clone status`: pending or in-progress"})
    progress = fields.Dict(allow_none=True, metadata={
        "description": "the mgr's progress report (percentage, amount cloned, files cloned) where it gives one "
                       "(Ceph 18 and later), else null"})


class CephfsPathCreateSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME)
    source = fields.Nested(CephfsCloneSourceSchema, metadata={
        "description": "clone this snapshot of a subvolume (asynchronous: the path is creating until copied)"})
    size_bytes = volume_size(data_key="quota_bytes", metadata={
        "description": "required unless cloning; a clone defaults to its snapshot's quota"})
    fs = fields.String(validate=CEPH_NAME)
    cluster = fields.String(validate=CEPH_NAME)
    created_for = fields.String(validate=CREATED_FOR, metadata={
        "description": "what the volume is made for (e.g. k8s-claim:<uid>); set at creation only"})

    @validates_schema
    def _quota_or_source(self, data, **_):
        if "size_bytes" not in data and "source" not in data:
            raise ValidationError("Missing data for required field.", field_name="quota_bytes")


class CephfsPathPatchSchema(Schema):
    size_bytes = volume_size(required=True, data_key="quota_bytes")


class CephfsPathSchema(VolumeSchema):
    fs = fields.String(attribute="fs_name")
    layout = fields.String(metadata={"description": "directory (a directory with a quota) or subvolume (a mgr "
                                                    "subvolume in the project's subvolume group)"})
    path = fields.String(metadata={"description": "the directory in the file system: for a subvolume, what "
                                                  "`ceph fs subvolume getpath` answers"})
    quota_bytes = fields.Integer(attribute="size_bytes")
    clone = fields.Nested(CephfsCloneSchema, attribute="clone_progress", metadata={
        "description": "only while a clone is being copied (state creating), in the answer for this path alone"})


class NodeCredentialsSchema(Schema):
    """The cephx user a host mounts one CephFS path with, and what its caps reach (that path, read-write)."""

    user_id = fields.String(metadata={"description": "the user, without `client.` (ceph-fuse --id, a CSI userID)"})
    key = fields.String(metadata={"description": "its cephx key: keep it as a secret"})
    cluster = fields.String()
    fs = fields.String()
    path = fields.String()


class CephfsPathPageSchema(PageSchema):
    items = fields.List(fields.Nested(CephfsPathSchema))


# --- both kinds across projects -----------------------------------------------------------------

class VolumeListingArgs(PageArgs):
    project = fields.String(validate=PROJECT_NAME, metadata={
        "description": "only this project's volumes (a member token sees only its own project's anyway)"})


class VolumeListingSchema(RbdImageSchema):
    """A volume of either kind, with its kind: an RBD image has the fields of an RBD image (RbdImageSchema), a
    CephFS path those of a CephFS path (CephfsPathSchema)."""

    kind = fields.String(metadata={"description": "rbd (an RBD image) or cephfs (a CephFS path)"})
    fs = fields.String(metadata={"description": "CephFS paths only"})
    layout = fields.String(metadata={"description": "CephFS paths only"})
    path = fields.String(metadata={"description": "CephFS paths only"})
    quota_bytes = fields.Integer(metadata={"description": "CephFS paths only"})


class VolumeListingPageSchema(PageSchema):
    items = fields.List(fields.Nested(VolumeListingSchema))


# --- adoption of existing images and directories --------------------------------------------------

class RbdImageAdoptSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME, metadata={"description": "the image's name in Ceph"})
    pool = fields.String(validate=CEPH_NAME)
    cluster = fields.String(validate=CEPH_NAME)


class CephfsPathAdoptSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME, metadata={
        "description": "the directory <root>/<project>/<name>"})
    fs = fields.String(validate=CEPH_NAME)
    cluster = fields.String(validate=CEPH_NAME)
    group = fields.String(validate=CEPH_NAME, metadata={
        "description": "adopt the subvolume <name> of this subvolume group (e.g. ceph-csi's csi); on a file system "
                       "in the subvolume layout, the project's group when left out"})
    path = fields.String(metadata={"description": "optional check: must be <root>/<project>/<name> (a subvolume: "
                                                  "its getpath); robin does not move data to adopt it"})
    size_bytes = volume_size(data_key="quota_bytes", metadata={
        "description": "the quota to set; without it, the directory's ceph.quota.max_bytes (which must be set)"})
