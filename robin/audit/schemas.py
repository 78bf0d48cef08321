"""Schemas of the usage report (`GET /api/v2/audit/usage`)."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

TIME = {"format": "iso"}


class UsageArgs(Schema):
    refresh = fields.Boolean(load_default=False, metadata={"description": "measure every volume now (admin)"})
    volumes = fields.Boolean(load_default=False, metadata={"description": "list every volume (thousands, maybe)"})
    top = fields.Integer(load_default=10, validate=validate.Range(min=0, max=1000),
                         metadata={"description": "how many top consumers (by used bytes)"})


class PoolCapacitySchema(Schema):
    name = fields.String()
    stored_bytes = fields.Integer(metadata={"description": "bytes stored, before replication"})
    used_bytes = fields.Integer(metadata={"description": "raw bytes taken, replication included"})
    max_avail_bytes = fields.Integer(metadata={"description": "bytes that may still be stored"})
    objects = fields.Integer()


class ClusterCapacitySchema(Schema):
    name = fields.String()
    total_bytes = fields.Integer(allow_none=True)
    used_bytes = fields.Integer(allow_none=True)
    avail_bytes = fields.Integer(allow_none=True)
    pools = fields.List(fields.Nested(PoolCapacitySchema), metadata={"description": "`ceph df` per pool"})
    error = fields.String(allow_none=True, metadata={"description": "why `ceph df` gave nothing"})


class UsageTotalsSchema(Schema):
    provisioned_bytes = fields.Integer(metadata={"description": "bytes promised to live volumes"})
    used_bytes = fields.Integer(metadata={"description": "bytes the measured volumes occupy in Ceph"})
    volumes = fields.Integer()
    snapshots = fields.Integer()
    unmeasured_volumes = fields.Integer(metadata={"description": "volumes with no figure yet (not counted in used)"})
    oldest_measured_at = fields.DateTime(allow_none=True, **TIME)
    thin_ratio = fields.Float(allow_none=True, metadata={
        "description": "provisioned / used: 4.0 means four times more promised than occupied; null when used is 0"})


class PoolUsageSchema(UsageTotalsSchema):
    cluster = fields.String()
    kind = fields.String(metadata={"description": "rbd or cephfs"})
    pool = fields.String(metadata={"description": "the RBD pool, or the CephFS file system"})


class ProjectUsageSchema(UsageTotalsSchema):
    project = fields.String()
    quota_bytes = fields.Integer()
    quota_volumes = fields.Integer()


class VolumeUsageSchema(Schema):
    id = fields.String()
    kind = fields.String()
    project = fields.String()
    cluster = fields.String()
    pool = fields.String(metadata={"description": "the RBD pool, or the CephFS file system"})
    name = fields.String()
    state = fields.String()
    provisioned_bytes = fields.Integer()
    used_bytes = fields.Integer(allow_none=True)
    method = fields.String(allow_none=True, metadata={
        "description": "fast-diff | full-scan (object map invalid) | full-scan (no object map) | rbytes"})
    measured_at = fields.DateTime(allow_none=True, **TIME)
    age_seconds = fields.Float(allow_none=True)
    snapshots = fields.Integer()


class UsageRefreshSchema(Schema):
    measured = fields.Integer()
    failed = fields.List(fields.Dict())
    seconds = fields.Float()


class UsageReportSchema(Schema):
    generated_at = fields.DateTime(**TIME)
    refresh = fields.Nested(UsageRefreshSchema, allow_none=True)
    clusters = fields.List(fields.Nested(ClusterCapacitySchema))
    pools = fields.List(fields.Nested(PoolUsageSchema))
    projects = fields.List(fields.Nested(ProjectUsageSchema))
    top_consumers = fields.List(fields.Nested(VolumeUsageSchema))
    volumes = fields.List(fields.Nested(VolumeUsageSchema), allow_none=True)
