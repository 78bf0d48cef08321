"""Name patterns outside the API's schemas match the whole string: `$` would also match before a final
newline, so "abc\n" would pass for "abc"."""
from __future__ import annotations

import pytest

from csi_shim.errors import CsiError
from csi_shim.ids import SnapshotRef, parse_volume_id, robin_name
from csi_shim.parameters import Parameters
from robin.errors import InvalidInput
from robin.gateway.service import validate_account
from robin.migrate.errors import MigrationError
from robin.migrate.gluster import GlusterSource


def test_csi_volume_and_snapshot_ids_with_a_trailing_newline_are_not_ours():
    assert parse_volume_id("rbd:web:data") is not None
    assert parse_volume_id("rbd:web\n:data") is None
    assert parse_volume_id("rbd:web:data\n") is None
    assert SnapshotRef.parse("rbd:web:data@gold\n") is None


def test_csi_name_with_a_trailing_newline_is_hashed_not_kept():
    assert robin_name("data", "rbd:web:") == "data"
    assert robin_name("data\n", "rbd:web:").startswith("csi-")


def test_csi_project_parameter_with_a_trailing_newline_is_refused():
    with pytest.raises(CsiError, match="cannot be a robin project"):
        Parameters.parse({"project": "web\n"}, default_project="default")


@pytest.mark.parametrize("spec", ["gluster-1:/data\n", "gluster-1\n:/data", "gluster-1:/data/app\n"])
def test_gluster_source_with_a_trailing_newline_is_refused(spec):
    with pytest.raises(MigrationError):
        GlusterSource.parse(spec)


def test_gateway_user_with_a_trailing_newline_is_refused():
    validate_account("alice", "secret")
    with pytest.raises(InvalidInput, match="user"):
        validate_account("alice\n", "secret")
