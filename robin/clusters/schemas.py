from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from robin.schemas import CEPH_NAME

ABSOLUTE = validate.Regexp(r"^/", error="must be an absolute path")


class ClusterCreateSchema(Schema):
    name = fields.String(required=True, validate=CEPH_NAME)
    conf_path = fields.String(validate=ABSOLUTE, metadata={"description": "a ceph.conf on robin's hosts"})
    keyring_path = fields.String(validate=ABSOLUTE)
    mon_host = fields.String(validate=validate.Length(min=1, max=1024),
                             metadata={"description": "monitor addresses, as in ceph.conf's mon_host"})
    cephx_key = fields.String(data_key="key", validate=validate.Length(min=1, max=128), load_only=True,
                              metadata={"description": "the client's cephx key; stored, never returned"})
    client_id = fields.String(load_default="admin", validate=CEPH_NAME)

    @validates_schema
    def _reachable(self, data, **_):
        if "conf_path" not in data and not ("mon_host" in data and "cephx_key" in data):
            raise ValidationError("give conf_path, or mon_host and key", field_name="conf_path")


class ClusterSchema(Schema):
    name = fields.String()
    conf_path = fields.String(allow_none=True)
    keyring_path = fields.String(allow_none=True)
    mon_host = fields.String(allow_none=True)
    client_id = fields.String()
    is_default = fields.Boolean()
    created_at = fields.DateTime(format="iso")
    up = fields.Boolean(dump_only=True, metadata={
        "description": "whether the cluster's monitors and the OSDs of the pools robin uses there answer "
                       "(probed at most every few seconds)"})
    health = fields.String(dump_only=True, metadata={"description": '"ok", or "unavailable: " and why'})


class ClusterDetailSchema(ClusterSchema):
    reachable = fields.Boolean()
    error = fields.String()
    fsid = fields.String()
    monitors = fields.List(fields.String(), metadata={"description": "monitor addresses (ip:port) clients use"})
    pools = fields.List(fields.String())
    filesystems = fields.List(fields.String())
