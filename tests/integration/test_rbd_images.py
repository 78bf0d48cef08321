"""RBD images through the API, checked in Ceph itself and in the database after every call."""
from __future__ import annotations

import pytest
import rados
import rbd
from sqlalchemy import select

from robin.ceph.rbd_ops import DIRECTORY_OBJECT, feature_names
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30


def images_in_ceph(ioctx) -> set[str]:
    return set(rbd.RBD().list(ioctx))


def recorded_owner(ioctx, name) -> str | None:
    """Read robin's ownership directory straight from RADOS."""
    with rados.ReadOpCtx() as op:
        values, _ = ioctx.get_omap_vals_by_keys(op, (name,))
        try:
            ioctx.operate_read_op(op, DIRECTORY_OBJECT)
        except rados.ObjectNotFound:
            return None
        return {key: value.decode() for key, value in values}.get(name)


def ceph_image(ioctx, name):
    return rbd.Image(ioctx, name, read_only=True)


def row(db_rows, name) -> list[RbdImage]:
    return db_rows(select(RbdImage).where(RbdImage.name == name).order_by(RbdImage.created_at))


@pytest.fixture()
def project(new_project):
    return new_project(max_bytes=10 * GiB, max_volumes=20)


def create(admin, project, **body):
    body.setdefault("name", unique("img"))
    body.setdefault("size_bytes", 64 * MiB)
    return admin.post(f"/api/v2/projects/{project}/rbd-images", json=body)


def test_create_makes_the_image_in_ceph(admin, project, rbd_ioctx, db_rows):
    name = unique("img")
    response = create(admin, project, name=name, size_bytes=100 * MiB, metadata={"app": "db"},
                      features=["layering", "exclusive-lock"])
    assert response.status_code == 201, response.json
    body = response.json
    assert body["state"] == "available" and body["size_bytes"] == 100 * MiB
    assert body["provisioned_bytes"] == 100 * MiB and body["pool"] == "rbd" and body["project"] == project
    with ceph_image(rbd_ioctx, name) as image:
        assert image.size() == 100 * MiB
        assert feature_names(image.features()) == ("layering", "exclusive-lock")
        assert image.metadata_get("app") == "db"
    assert recorded_owner(rbd_ioctx, name) == body["id"]
    [stored] = row(db_rows, name)
    assert stored.state is VolumeState.AVAILABLE and stored.id == body["id"] and stored.size_bytes == 100 * MiB


def test_default_features(admin, project, rbd_ioctx):
    name = create(admin, project).json["name"]
    with ceph_image(rbd_ioctx, name) as image:
        assert set(feature_names(image.features())) == {
            "layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}


def test_created_for_is_recorded_at_creation_and_never_changed(admin, project, db_rows):
    name = create(admin, project, created_for="k8s-claim:0f6c1b2e-5c1d-4d0e-9d7e-3f1f2a6b7c8d").json["name"]
    assert admin.get(f"/api/v2/projects/{project}/rbd-images/{name}").json["created_for"] == \
        "k8s-claim:0f6c1b2e-5c1d-4d0e-9d7e-3f1f2a6b7c8d"
    response = admin.patch(f"/api/v2/projects/{project}/rbd-images/{name}",
                           json={"size_bytes": 128 * MiB, "created_for": "csi:mine"})
    assert response.status_code == 422 and "created_for" in response.json["error"]["details"]["fields"]
    [stored] = row(db_rows, name)
    assert stored.created_for == "k8s-claim:0f6c1b2e-5c1d-4d0e-9d7e-3f1f2a6b7c8d" and stored.size_bytes == 64 * MiB
    assert create(admin, project).json["created_for"] is None
    for bad in ("K8S-claim:x", "k8s-claim:", "k8s-claim:a b", "k8s-claim:x\n", "k8s-claim:" + "x" * 201):
        response = create(admin, project, created_for=bad)
        assert response.status_code == 422 and "created_for" in response.json["error"]["details"]["fields"], bad
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 2


def test_get_and_list_with_cursor(admin, project):
    names = sorted(create(admin, project).json["name"] for _ in range(3))
    got = admin.get(f"/api/v2/projects/{project}/rbd-images/{names[0]}").json
    assert got["name"] == names[0] and "used_bytes" not in got
    first = admin.get(f"/api/v2/projects/{project}/rbd-images", query_string={"limit": 2}).json
    assert [i["name"] for i in first["items"]] == names[:2] and first["next_cursor"]
    second = admin.get(f"/api/v2/projects/{project}/rbd-images",
                       query_string={"limit": 2, "cursor": first["next_cursor"]}).json
    assert [i["name"] for i in second["items"]] == names[2:] and second["next_cursor"] is None


def test_used_bytes_comes_from_ceph(admin, project, rbd_ioctx):
    name = create(admin, project, size_bytes=64 * MiB).json["name"]
    assert admin.get(f"/api/v2/projects/{project}/rbd-images/{name}",
                     query_string={"with_used": "true"}).json["used_bytes"] == 0
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"x" * 4096, 0)
        image.write(b"y" * 4096, 32 * MiB)
    used = admin.get(f"/api/v2/projects/{project}/rbd-images/{name}", query_string={"with_used": "true"}).json
    assert used["used_bytes"] == 2 * 4 * MiB  # two 4 MiB objects allocated
    usage = admin.get(f"/api/v2/projects/{project}/usage", query_string={"refresh": "true"}).json
    assert usage["used_bytes"] == 8 * MiB and usage["provisioned_bytes"] == 64 * MiB
    assert usage["remaining_bytes"] == 10 * GiB - 64 * MiB and usage["volumes"] == 1


def test_grow(admin, project, rbd_ioctx, db_rows):
    name = create(admin, project).json["name"]
    response = admin.patch(f"/api/v2/projects/{project}/rbd-images/{name}", json={"size_bytes": 256 * MiB})
    assert response.status_code == 200 and response.json["size_bytes"] == 256 * MiB
    with ceph_image(rbd_ioctx, name) as image:
        assert image.size() == 256 * MiB
    [stored] = row(db_rows, name)
    assert stored.size_bytes == 256 * MiB and stored.target_size_bytes is None
    assert stored.state is VolumeState.AVAILABLE


def test_shrink_needs_allow_shrink(admin, project, rbd_ioctx):
    name = create(admin, project, size_bytes=128 * MiB).json["name"]
    path = f"/api/v2/projects/{project}/rbd-images/{name}"
    refused = admin.patch(path, json={"size_bytes": 64 * MiB})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "shrink_not_allowed"
    with ceph_image(rbd_ioctx, name) as image:
        assert image.size() == 128 * MiB
    assert admin.patch(path, json={"size_bytes": 64 * MiB, "allow_shrink": True}).json["size_bytes"] == 64 * MiB
    with ceph_image(rbd_ioctx, name) as image:
        assert image.size() == 64 * MiB


def test_grow_beyond_quota_is_refused_and_changes_nothing(admin, new_project, rbd_ioctx, db_rows):
    project = new_project(max_bytes=GiB)
    name = create(admin, project, size_bytes=512 * MiB).json["name"]
    response = admin.patch(f"/api/v2/projects/{project}/rbd-images/{name}", json={"size_bytes": 2 * GiB})
    assert response.status_code == 403
    error = response.json["error"]
    assert error["code"] == "quota_exceeded" and error["details"]["remaining_bytes"] == 512 * MiB
    with ceph_image(rbd_ioctx, name) as image:
        assert image.size() == 512 * MiB
    [stored] = row(db_rows, name)
    assert stored.size_bytes == 512 * MiB and stored.state is VolumeState.AVAILABLE


def test_delete_moves_the_image_to_the_trash(admin, project, rbd_ioctx, db_rows):
    name = create(admin, project).json["name"]
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}").status_code == 204
    assert name not in images_in_ceph(rbd_ioctx)
    assert name in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    [stored] = row(db_rows, name)
    assert stored.state is VolumeState.DELETED and stored.deleted_at is not None
    assert stored.purge_after > stored.deleted_at and stored.trash_ref
    assert admin.get(f"/api/v2/projects/{project}/rbd-images/{name}").status_code == 404
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0
    # The name is free again.
    assert create(admin, project, name=name).status_code == 201


def test_delete_in_use_image_is_409_and_keeps_it(admin, project, rbd_ioctx, db_rows):
    name = create(admin, project).json["name"]
    with rbd.Image(rbd_ioctx, name):  # an open image has a watcher, as a mapped one does
        response = admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}")
    assert response.status_code == 409 and response.json["error"]["code"] == "ceph_busy"
    assert name in images_in_ceph(rbd_ioctx)
    [stored] = row(db_rows, name)
    assert stored.state is VolumeState.AVAILABLE


def test_project_with_volumes_cannot_be_deleted(admin, project, rbd_ioctx, db_rows):
    name = create(admin, project).json["name"]
    response = admin.delete(f"/api/v2/projects/{project}")
    assert response.status_code == 409
    error = response.json["error"]
    assert error["code"] == "project_not_empty" and name in error["details"]["volumes"]
    assert admin.get(f"/api/v2/projects/{project}").status_code == 200
    [stored] = row(db_rows, name)
    assert stored.state is VolumeState.AVAILABLE and name in images_in_ceph(rbd_ioctx)
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 64 * MiB


def test_quota_exceeded_says_what_is_left(admin, new_project, rbd_ioctx, db_rows):
    project = new_project(max_bytes=GiB, max_volumes=5)
    create(admin, project, size_bytes=768 * MiB)
    name = unique("img")
    response = create(admin, project, name=name, size_bytes=512 * MiB)
    assert response.status_code == 403
    error = response.json["error"]
    assert error["code"] == "quota_exceeded" and error["details"]["remaining_bytes"] == 256 * MiB
    assert name not in images_in_ceph(rbd_ioctx) and row(db_rows, name) == []


def test_volume_count_quota(admin, new_project, rbd_ioctx, db_rows):
    project = new_project(max_volumes=1)
    assert create(admin, project).status_code == 201
    name = unique("img")
    response = create(admin, project, name=name)
    assert response.status_code == 403 and response.json["error"]["details"]["remaining_volumes"] == 0
    assert response.json["error"]["code"] == "quota_exceeded"
    assert name not in images_in_ceph(rbd_ioctx) and row(db_rows, name) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 1


def test_name_taken_is_409(admin, project, new_project):
    name = create(admin, project).json["name"]
    again = create(admin, project, name=name)
    assert again.status_code == 409 and again.json["error"]["code"] == "name_taken"
    elsewhere = create(admin, new_project(), name=name)  # the Ceph name is unique per pool, not per project
    assert elsewhere.status_code == 409


def test_foreign_image_with_the_name_is_never_taken_over(admin, project, rbd_ioctx, db_rows):
    name = unique("foreign")
    rbd.RBD().create(rbd_ioctx, name, 32 * MiB)
    try:
        response = create(admin, project, name=name, size_bytes=32 * MiB)
        assert response.status_code == 409 and response.json["error"]["code"] == "name_taken"
        with ceph_image(rbd_ioctx, name) as image:
            assert image.size() == 32 * MiB
        assert recorded_owner(rbd_ioctx, name) is None
        assert row(db_rows, name) == []
        assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 0
    finally:
        rbd.RBD().remove(rbd_ioctx, name)


BAD_IMAGES = [
    ({"size_bytes": -1}, "size_bytes"),
    ({"size_bytes": 0}, "size_bytes"),
    ({"size_bytes": 1.5}, "size_bytes"),
    ({"size_bytes": "1024"}, "size_bytes"),
    ({"size_bytes": 2**51}, "size_bytes"),  # above ROBIN_MAX_VOLUME_BYTES
    ({"name": "bad/name"}, "name"),
    ({"name": "bad@snap"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 200}, "name"),
    ({"features": ["teleport"]}, "features"),
    ({"features": ["fast-diff"]}, "features"),
    ({"features": ["bogus", "object-map"]}, "features"),  # an item's error and the list's own: once a 500
    ({"metadata": {"robin.volume_id": "x"}}, "metadata"),
    ({"owner": "me"}, "owner"),
]


@pytest.mark.parametrize("override, field", BAD_IMAGES)
def test_bad_input_is_422_and_creates_nothing(admin, project, rbd_ioctx, db_rows, override, field):
    before = images_in_ceph(rbd_ioctx)
    body = {"name": unique("bad"), "size_bytes": MiB} | override
    response = admin.post(f"/api/v2/projects/{project}/rbd-images", json=body)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_error"
    assert field in response.json["error"]["details"]["fields"]
    assert images_in_ceph(rbd_ioctx) == before
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 0


def test_pool_outside_the_allowed_list_is_refused(admin, project, rados_cluster, db_rows):
    name = unique("img")
    response = create(admin, project, name=name, pool="cephfs_metadata")
    assert response.status_code == 422 and "pool" in response.json["error"]["details"]["fields"]
    with rados_cluster.open_ioctx("cephfs_metadata") as ioctx:
        assert name not in images_in_ceph(ioctx)
    assert row(db_rows, name) == []


def test_unknown_cluster_is_404(admin, project, rbd_ioctx, db_rows):
    name = unique("img")
    response = create(admin, project, name=name, cluster="nowhere")
    assert response.status_code == 404 and response.json["error"]["code"] == "cluster_not_found"
    assert name not in images_in_ceph(rbd_ioctx) and row(db_rows, name) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["volumes"] == 0


def test_member_manages_its_own_images(as_role, project, rbd_ioctx):
    member = as_role("member", project)
    name = create(member, project).json["name"]
    assert name in images_in_ceph(rbd_ioctx)
    resized = member.patch(f"/api/v2/projects/{project}/rbd-images/{name}", json={"size_bytes": 128 * MiB})
    assert resized.status_code == 200
    assert member.delete(f"/api/v2/projects/{project}/rbd-images/{name}").status_code == 204
    assert name not in images_in_ceph(rbd_ioctx)


def test_readyz_and_metrics(app, admin, anonymous, project):
    from robin.audit import usage

    create(admin, project)
    with app.app_context():  # the maintenance leader's pass, which the scrape's totals report
        usage.store_totals()
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["ceph:default"] == "ok"
    text = admin.get("/metrics").data.decode()
    assert f'robin_project_provisioned_bytes{{project="{project}"}} 67108864\n' in text
    assert 'robin_ceph_operation_duration_seconds_count{cluster="default",operation="rbd.create",outcome="ok"}' in text
    assert "robin_http_request_duration_seconds_bucket" in text
