from __future__ import annotations

from marshmallow import Schema, fields, validate

from robin.schemas import CEPH_NAME, PageArgs, PageSchema

STATUSES = ("started", "verified", "mismatched", "failed", "cut-over", "finalized")


class MigrationRecordCreateSchema(Schema):
    source = fields.String(required=True, validate=validate.Length(min=1, max=4096), metadata={
        "description": "the GlusterFS source, server[:port]:/volume[/directory], or pv/<name> for a Kubernetes PV"})
    volume_kind = fields.String(required=True, validate=validate.OneOf(("rbd", "cephfs")))
    volume_name = fields.String(required=True, validate=CEPH_NAME)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    run = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64), metadata={
        "description": "the run of the tool that writes the record; a `started` record of one run holds the "
                       "destination until that run records something else"})
    replaces = fields.String(load_only=True, load_default=None, allow_none=True,
                             validate=validate.Length(min=1, max=64), metadata={
        "description": "with `started`: the run this one takes over (one known to have died); any other run's "
                       "hold on the destination is refused with 409 `migration_running`"})
    report = fields.Dict(load_default=dict, metadata={
        "description": "the tool's per-volume result: files, bytes, duration, throughput, mismatches"})


class MigrationRecordSchema(MigrationRecordCreateSchema):
    id = fields.String(dump_only=True)
    project = fields.String(dump_only=True)
    at = fields.DateTime(format="iso", dump_only=True)
    actor = fields.String(dump_only=True)


class MigrationRecordArgs(PageArgs):
    volume_kind = fields.String(validate=validate.OneOf(("rbd", "cephfs")))
    volume_name = fields.String(validate=CEPH_NAME)


class MigrationRecordPageSchema(PageSchema):
    items = fields.List(fields.Nested(MigrationRecordSchema))
