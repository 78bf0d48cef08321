"""Names that lie and values beyond their bounds, refused through the API before anything reaches Ceph or the
database: names are matched whole (a trailing newline is not a valid name), image metadata cannot configure
librbd, lists are capped."""
from __future__ import annotations

import pytest
import rbd
from sqlalchemy import select

from robin.clusters.models import CephCluster
from robin.snapshots.models import Snapshot
from robin.volumes.models import CephfsPath, RbdImage
from tests.conftest import cephfs_exists, unique

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30


@pytest.fixture()
def project(new_project):
    return new_project(max_bytes=GiB, max_volumes=20, max_snapshots=20)


def images(project) -> str:
    return f"/api/v2/projects/{project}/rbd-images"


def image_metadata(ioctx, name) -> dict[str, str]:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return dict(image.metadata_list())


def refused(response, field: str, code: str = "validation_error") -> None:
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == code
    assert field in response.json["error"]["details"]["fields"]


# --- names are matched whole ----------------------------------------------------------------------

def test_image_name_with_trailing_newline_is_refused(admin, project, rbd_ioctx, db_rows):
    name = unique("img")
    refused(admin.post(images(project), json={"name": name + "\n", "size_bytes": MiB}), "name")
    assert not {name, name + "\n"} & set(rbd.RBD().list(rbd_ioctx))
    assert db_rows(select(RbdImage).where(RbdImage.name.in_([name, name + "\n"]))) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 0


def test_cephfs_path_name_with_trailing_newline_is_refused(admin, project, fs, db_rows):
    name = unique("fs")
    response = admin.post(f"/api/v2/projects/{project}/cephfs-paths", json={"name": name + "\n", "quota_bytes": MiB})
    refused(response, "name")
    assert not cephfs_exists(fs, f"/robin/{project}/{name}\n") and not cephfs_exists(fs, f"/robin/{project}/{name}")
    assert db_rows(select(CephfsPath).where(CephfsPath.name.in_([name, name + "\n"]))) == []


def test_snapshot_name_with_trailing_newline_is_refused(admin, project, rbd_ioctx, db_rows):
    image = unique("img")
    assert admin.post(images(project), json={"name": image, "size_bytes": MiB}).status_code == 201
    refused(admin.post(f"{images(project)}/{image}/snapshots", json={"name": "gold\n"}), "name")
    with rbd.Image(rbd_ioctx, image, read_only=True) as opened:
        assert list(opened.list_snaps()) == []
    image_id = select(RbdImage.id).where(RbdImage.name == image).scalar_subquery()
    assert db_rows(select(Snapshot).where(Snapshot.rbd_image_id == image_id)) == []


def test_cluster_name_with_trailing_newline_is_refused(admin, ceph_conf, db_rows):
    name = unique("c")
    refused(admin.post("/api/v2/clusters", json={"name": name + "\n", "conf_path": ceph_conf}), "name")
    assert db_rows(select(CephCluster).where(CephCluster.name.in_([name, name + "\n"]))) == []


# --- image metadata and features -------------------------------------------------------------------

def test_conf_metadata_key_is_refused_on_create(admin, project, rbd_ioctx, db_rows):
    """librbd would apply conf_* keys as the image's own configuration in every client that opens it."""
    name = unique("img")
    response = admin.post(images(project), json={"name": name, "size_bytes": MiB,
                                                 "metadata": {"app": "db", "conf_rbd_cache": "false"}})
    refused(response, "metadata", code="reserved_metadata_key")
    assert response.json["error"]["details"]["keys"] == ["conf_rbd_cache"]
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert db_rows(select(RbdImage).where(RbdImage.name == name)) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 0


def test_conf_metadata_key_is_refused_on_clone(admin, project, rbd_ioctx, db_rows):
    parent = unique("parent")
    assert admin.post(images(project), json={"name": parent, "size_bytes": MiB,
                                             "metadata": {"app": "db"}}).status_code == 201
    child = unique("child")
    response = admin.post(images(project), json={"name": child, "source": {"image": parent},
                                                 "metadata": {"conf_rbd_qos_iops_limit": "1"}})
    refused(response, "metadata", code="reserved_metadata_key")
    assert child not in rbd.RBD().list(rbd_ioctx)
    assert image_metadata(rbd_ioctx, parent) == {"app": "db"}
    with rbd.Image(rbd_ioctx, parent, read_only=True) as opened:
        assert list(opened.list_snaps()) == [] and list(opened.list_children2()) == []
    assert db_rows(select(RbdImage).where(RbdImage.name == child)) == []


@pytest.mark.parametrize("override, field", [
    ({"features": ["layering"] * 6}, "features"),
    ({"metadata": {f"k{i}": "v" for i in range(65)}}, "metadata"),
    ({"metadata": {"k" * 129: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 4097}}, "metadata"),
    ({"size_bytes": 2**63}, "size_bytes"),
], ids=["features", "metadata-items", "metadata-key", "metadata-value", "size"])
def test_lists_and_sizes_beyond_their_caps_are_refused(admin, project, rbd_ioctx, db_rows, override, field):
    name = unique("img")
    refused(admin.post(images(project), json={"name": name, "size_bytes": MiB} | override), field)
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert db_rows(select(RbdImage).where(RbdImage.name == name)) == []
