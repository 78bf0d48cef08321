"""Several Ceph clusters: a second dev cluster registered by monitors + key and by conf + keyring;
discovery of its pools and file systems; volumes placed on it; connections kept apart."""
from __future__ import annotations

import configparser
import re

import pytest
import rados
import rbd

from robin.dev.cluster import DevCluster
from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB = 2**20


def admin_key(cluster: DevCluster) -> str:
    keyring = configparser.ConfigParser()
    keyring.read(cluster.keyring_path)
    return keyring["client.admin"]["key"]


def mon_host(cluster: DevCluster) -> str:
    for line in cluster.conf_path.read_text().splitlines():
        if line.strip().startswith("mon host"):
            return line.split("=", 1)[1].strip()
    raise AssertionError("no mon host in the dev cluster's conf")


def test_register_by_monitors_and_key_and_discover(admin, registered, second_cluster):
    name = registered(mon_host=mon_host(second_cluster), key=admin_key(second_cluster))
    detail = admin.get(f"/api/v2/clusters/{name}").json
    assert detail["reachable"] is True and detail["mon_host"] == mon_host(second_cluster)
    assert {"rbd", "cephfs_metadata", "cephfs_data"} <= set(detail["pools"])
    assert detail["filesystems"] == ["cephfs"]
    # the v1 addresses, which the in-tree Kubernetes plugins and kernel clients are given
    v1_addresses = re.findall(r"v1:([0-9.]+:[0-9]+)", mon_host(second_cluster))
    assert v1_addresses and detail["monitors"] == v1_addresses
    assert "key" not in detail and "cephx_key" not in detail
    assert name in [cluster["name"] for cluster in admin.get("/api/v2/clusters").json]


def images_on(cluster: DevCluster) -> list[str]:
    """The images in another cluster's pool rbd, read through a connection of its own."""
    other = rados.Rados(conffile=str(cluster.conf_path))
    other.connect(timeout=10)
    try:
        with other.open_ioctx("rbd") as ioctx:
            return rbd.RBD().list(ioctx)
    finally:
        other.shutdown()


def test_volumes_on_the_second_cluster(admin, registered, second_cluster, new_project, rbd_ioctx):
    name = registered(conf_path=str(second_cluster.conf_path), keyring_path=str(second_cluster.keyring_path))
    project = new_project()
    image = unique("img")
    created = admin.post(f"/api/v2/projects/{project}/rbd-images",
                         json={"name": image, "size_bytes": 8 * MiB, "cluster": name})
    assert created.status_code == 201 and created.json["cluster"] == name
    assert image in images_on(second_cluster)
    assert image not in rbd.RBD().list(rbd_ioctx)  # not on the default cluster
    # The same Ceph name on another cluster is another volume.
    assert admin.post(f"/api/v2/projects/{new_project()}/rbd-images",
                      json={"name": image, "size_bytes": 8 * MiB}).status_code == 201
    purged = admin.delete(f"/api/v2/projects/{project}/rbd-images/{image}", query_string={"purge": "true"})
    assert purged.status_code == 204
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


@pytest.mark.parametrize("body, field", [
    ({}, "conf_path"),
    ({"mon_host": "127.0.0.1:1"}, "conf_path"),
    ({"conf_path": "relative/ceph.conf"}, "conf_path"),
])
def test_registration_needs_a_way_in(admin, body, field):
    response = admin.post("/api/v2/clusters", json={"name": unique("c"), **body})
    assert response.status_code == 422 and field in response.json["error"]["details"]["fields"]


@pytest.mark.parametrize("field", ["conf_path", "keyring_path"])
def test_registration_refuses_files_robin_cannot_read(admin, ceph_conf, tmp_path, field):
    body = {"name": unique("c"), "conf_path": ceph_conf}
    for path, problem in ((tmp_path / "missing", "does not exist"), (tmp_path, "is not a file")):
        response = admin.post("/api/v2/clusters", json={**body, field: str(path)})
        assert response.status_code == 422, response.json
        error = response.json["error"]
        assert error["code"] == "cluster_file_unreadable"
        assert f"{path} {problem}" in error["details"]["fields"][field][0]
        assert admin.get(f"/api/v2/clusters/{body['name']}").status_code == 404  # nothing registered


def test_unreachable_cluster_is_described_not_failed(admin, registered, tmp_path):
    name = registered(mon_host="v1:127.0.0.1:9", key="AQBogus==")
    detail = admin.get(f"/api/v2/clusters/{name}").json
    assert detail["reachable"] is False and detail["error"]


def test_clusters_are_for_admins(as_role, new_project, db_rows):
    from sqlalchemy import select

    from robin.clusters.models import CephCluster

    member = as_role("member", new_project())
    before = db_rows(select(CephCluster.name).order_by(CephCluster.name))
    listed = member.get("/api/v2/clusters")
    assert listed.status_code == 403 and listed.json["error"]["code"] == "forbidden"
    refused = member.post("/api/v2/clusters", json={"name": unique("c"), "conf_path": "/x"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    refused = member.delete("/api/v2/clusters/default")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert db_rows(select(CephCluster.name).order_by(CephCluster.name)) == before


def test_cluster_keys_are_encrypted_at_rest(admin, registered, second_cluster, new_project):
    """Attack 7: the registry's row holds no plain cephx key, and the cluster still works."""
    from sqlalchemy import text

    from robin.db import db

    key = admin_key(second_cluster)
    name = registered(mon_host=mon_host(second_cluster), key=key)
    with db.engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM ceph_clusters WHERE name = :name"), {"name": name}).one()
    stored = " ".join(str(value) for value in row)
    assert key not in stored and key.rstrip("=") not in stored
    assert row.cephx_key and row.cephx_key != key
    project, image = new_project(), unique("img")
    created = admin.post(f"/api/v2/projects/{project}/rbd-images",
                         json={"name": image, "size_bytes": 8 * MiB, "cluster": name})
    assert created.status_code == 201, created.json
    assert image in images_on(second_cluster)
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{image}",
                        query_string={"purge": "true"}).status_code == 204
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204
