"""Deferred deletion: the Ceph trash for RBD images, a trash directory for CephFS paths, restore,
purge at the due time, and admins' immediate purge."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import rbd
import requests
from sqlalchemy import select, update

from robin.audit.models import AuditEvent
from robin.ceph import rbd_ops
from robin.clusters.models import CephCluster
from robin.db import db, utcnow
from robin.pagination import encode_cursor
from robin.volumes import service
from robin.volumes.kinds import RBD
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.conftest import cephfs_exists as exists
from tests.conftest import unique
from tests.integration.test_ceph_unavailable import dead_cluster  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30



def trash_names(ioctx) -> set[str]:
    return {entry["name"] for entry in rbd.RBD().trash_list(ioctx)}



def purge_everything_due(app, later=timedelta(days=365)):
    with app.app_context():
        return service.purge_due(utcnow() + later)


def test_rbd_trash_restore_and_purge(app, admin, new_project, rbd_ioctx, db_rows):
    project = new_project(max_bytes=GiB)
    url = f"/api/v2/projects/{project}/rbd-images"
    name = unique("img")
    assert admin.post(url, json={"name": name, "size_bytes": 512 * MiB}).status_code == 201
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"keep me", 0)
    assert admin.delete(f"{url}/{name}").status_code == 204
    assert name in trash_names(rbd_ioctx) and name not in rbd.RBD().list(rbd_ioctx)
    trashed = admin.get(url, query_string={"trashed": "true"}).json["items"]
    assert [item["name"] for item in trashed] == [name] and trashed[0]["purge_after"]
    # Quota was released at delete, so another volume can use it meanwhile...
    other = unique("img")
    assert admin.post(url, json={"name": other, "size_bytes": 768 * MiB}).status_code == 201
    # ...and restoring needs it back.
    refused = admin.post(f"{url}/{name}/restore")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "quota_exceeded"
    assert name in trash_names(rbd_ioctx)
    assert admin.delete(f"{url}/{other}", query_string={"purge": "true"}).status_code == 204
    restored = admin.post(f"{url}/{name}/restore")
    assert restored.status_code == 200 and restored.json["state"] == "available"
    assert restored.json["deleted_at"] is None and restored.json["purge_after"] is None
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.read(0, 7) == b"keep me"
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 512 * MiB

    assert admin.delete(f"{url}/{name}").status_code == 204
    assert purge_everything_due(app)["purged"] >= 1
    assert name not in trash_names(rbd_ioctx)
    [row] = db_rows(select(RbdImage).where(RbdImage.name == name))
    assert row.state is VolumeState.DELETED and row.purged_at is not None
    assert admin.post(f"{url}/{name}/restore").json["error"]["code"] == "not_in_trash"


def test_restore_refused_when_the_name_was_taken_again(admin, new_project, rbd_ioctx):
    project = new_project()
    url = f"/api/v2/projects/{project}/rbd-images"
    name = unique("img")
    admin.post(url, json={"name": name, "size_bytes": MiB})
    admin.delete(f"{url}/{name}")
    assert admin.post(url, json={"name": name, "size_bytes": MiB}).status_code == 201
    refused = admin.post(f"{url}/{name}/restore")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "name_taken"
    assert name in trash_names(rbd_ioctx)


def test_deleting_a_volume_that_never_reached_ceph_takes_no_trashed_image_of_its_name(app, admin, new_project,
                                                                                     rbd_ioctx, db_rows):
    """Another project's image of the name waits in the trash; a volume of that name whose create failed before
    Ceph made anything (kept in `error`) is deleted: its row gets no trash entry, so neither a restore hands it the
    other project's image nor its purge destroys that image."""
    owner_project, project, name = new_project(), new_project(), unique("img")
    url = f"/api/v2/projects/{owner_project}/rbd-images"
    admin.post(url, json={"name": name, "size_bytes": MiB})
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"theirs", 0)
        their_id = image.id()
    assert admin.delete(f"{url}/{name}").status_code == 204
    with app.app_context():
        failed = service.reserve_new(RBD, project, {"name": name, "size_bytes": MiB}, RBD.placement({}, project))
        service.set_state(failed, VolumeState.ERROR, error_message="create failed: as Ceph timed out before")
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}").status_code == 204
    [row] = db_rows(select(RbdImage).where(RbdImage.id == failed.id))
    assert row.state is VolumeState.DELETED and row.trash_ref is None and row.purged_at is not None
    assert admin.post(f"/api/v2/projects/{project}/rbd-images/{name}/restore").json["error"]["code"] == \
        "not_in_trash"
    assert admin.post(f"{url}/{name}/restore").status_code == 200  # the owner's, still in the trash
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.id() == their_id and image.read(0, 6) == b"theirs"


def test_purge_now_is_for_admins(admin, as_role, new_project, rbd_ioctx):
    project = new_project()
    member = as_role("member", project)
    url = f"/api/v2/projects/{project}/rbd-images"
    name = unique("img")
    assert member.post(url, json={"name": name, "size_bytes": MiB}).status_code == 201
    assert member.delete(f"{url}/{name}", query_string={"purge": "true"}).status_code == 403
    assert name in rbd.RBD().list(rbd_ioctx)
    assert admin.delete(f"{url}/{name}", query_string={"purge": "true"}).status_code == 204
    assert name not in rbd.RBD().list(rbd_ioctx) and name not in trash_names(rbd_ioctx)


def test_cephfs_trash_restore_and_purge(app, admin, new_project, fs, db_rows):
    project = new_project()
    url = f"/api/v2/projects/{project}/cephfs-paths"
    body = admin.post(url, json={"name": unique("fs"), "quota_bytes": 64 * MiB}).json
    path, name = body["path"], body["name"]
    handle = fs.open(f"{path}/notes", "w", 0o644)
    fs.write(handle, b"precious", 0)
    fs.close(handle)
    assert admin.delete(f"{url}/{name}").status_code == 204
    [row] = db_rows(select(CephfsPath).where(CephfsPath.name == name))
    assert not exists(fs, path) and exists(fs, row.trash_ref) and row.trash_ref.startswith("/robin/.trash/")
    assert admin.post(f"{url}/{name}/restore").status_code == 200
    assert exists(fs, f"{path}/notes") and not exists(fs, row.trash_ref)
    assert fs.getxattr(path, "ceph.quota.max_bytes").decode() == str(64 * MiB)

    assert admin.delete(f"{url}/{name}").status_code == 204
    [row] = db_rows(select(CephfsPath).where(CephfsPath.name == name))
    purge_everything_due(app)
    assert not exists(fs, row.trash_ref)
    [row] = db_rows(select(CephfsPath).where(CephfsPath.name == name))
    assert row.purged_at is not None


def test_nothing_is_purged_before_its_time(app, admin, new_project, rbd_ioctx):
    project = new_project()
    url = f"/api/v2/projects/{project}/rbd-images"
    name = unique("img")
    admin.post(url, json={"name": name, "size_bytes": MiB})
    admin.delete(f"{url}/{name}")
    purge_everything_due(app, later=timedelta(0))
    assert name in trash_names(rbd_ioctx)


def test_purge_racing_restore_never_records_a_live_image_as_purged(app, admin, admin_token, robin_url, new_project,
                                                                   rbd_ioctx, db_rows):
    """The maintenance purge (this process) and restores (robin's gunicorn workers) on the same
    trashed images at once: each image ends either live, owned and recorded available, or purged
    from the trash and recorded purged; never one recorded as the other."""
    project, count = new_project(), 8
    url = f"/api/v2/projects/{project}/rbd-images"
    names = [unique("img") for _ in range(count)]
    for name in names:
        assert admin.post(url, json={"name": name, "size_bytes": MiB}).status_code == 201
        assert admin.delete(f"{url}/{name}").status_code == 204
    start = threading.Barrier(count + 1)

    def restore(name):
        start.wait()
        return requests.post(f"{robin_url}{url}/{name}/restore", headers={"Authorization": f"Bearer {admin_token}"},
                             timeout=60)

    def purge():
        start.wait()
        return purge_everything_due(app)

    with ThreadPoolExecutor(count + 1) as pool:
        purged = pool.submit(purge)
        restores = dict(zip(names, pool.map(restore, names), strict=True))
        purged.result()
    rows = {name: row for name in names for row in db_rows(select(RbdImage).where(RbdImage.name == name))}
    in_pool = {name for name in names if name in rbd.RBD().list(rbd_ioctx)}
    # What Ceph holds and what robin recorded agree, for every image.
    assert {name for name, row in rows.items() if row.state is VolumeState.AVAILABLE} == in_pool
    assert not set(names) & trash_names(rbd_ioctx)
    for name, row in rows.items():
        answer = restores[name]
        if name in in_pool:
            with app.app_context():
                assert RBD.inspect(service.ceph_connection(row), row).owner == row.id  # still marked robin's
            assert answer.status_code == 200 and row.purged_at is None and row.trash_ref is None
        else:
            assert row.state is VolumeState.DELETED and row.purged_at is not None and row.trash_ref is None
            assert answer.status_code in (404, 409), answer.text
            assert answer.json()["error"]["code"] in ("not_in_trash", "state_changed")
    live = len(in_pool)
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == live * MiB


@pytest.mark.parametrize("collection,body", [("rbd-images", {"size_bytes": MiB}),
                                             ("cephfs-paths", {"quota_bytes": MiB})])
def test_the_trash_pages_through_volumes_of_one_name(admin, new_project, collection, body):
    """The trash may hold several volumes of one name, each deleted in turn: a page boundary between them skips
    none, and a cursor this listing did not hand out is refused."""
    url = f"/api/v2/projects/{new_project()}/{collection}"
    name, ids = unique("again"), []
    for _ in range(3):
        made = admin.post(url, json={"name": name, **body})
        assert made.status_code == 201, made.json
        ids.append(made.json["id"])
        assert admin.delete(f"{url}/{name}").status_code == 204
    seen, cursor = [], None
    while True:
        page = admin.get(url, query_string={"trashed": "true", "limit": 1, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.json
        seen += [item["id"] for item in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    refused = admin.get(url, query_string={"trashed": "true", "cursor": encode_cursor(name)})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_cursor"


def test_a_project_is_not_deleted_while_its_trash_holds_volumes(app, admin, new_project, rbd_ioctx, fs, db_rows):
    """A trashed volume's row is what purges its data and, for a subvolume, what keeps its name (and the RADOS
    namespace named after it) from other projects: the project goes only once its trash is purged."""
    project = new_project()
    image, directory = unique("img"), unique("fs")
    images, paths = f"/api/v2/projects/{project}/rbd-images", f"/api/v2/projects/{project}/cephfs-paths"
    assert admin.post(images, json={"name": image, "size_bytes": MiB}).status_code == 201
    assert admin.post(paths, json={"name": directory, "quota_bytes": MiB}).status_code == 201
    assert admin.delete(f"{images}/{image}").status_code == 204
    assert admin.delete(f"{paths}/{directory}").status_code == 204

    refused = admin.delete(f"/api/v2/projects/{project}")
    assert refused.status_code == 409
    error = refused.json["error"]
    assert error["code"] == "project_not_empty" and "trash" in error["message"]
    assert error["details"]["volumes"] == [] and sorted(error["details"]["in_trash"]) == sorted([image, directory])
    assert admin.get(f"/api/v2/projects/{project}").status_code == 200
    [image_row] = db_rows(select(RbdImage).where(RbdImage.name == image))
    [path_row] = db_rows(select(CephfsPath).where(CephfsPath.name == directory))
    assert image in trash_names(rbd_ioctx) and exists(fs, path_row.trash_ref)

    purge_everything_due(app)
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204
    assert image not in trash_names(rbd_ioctx) and not exists(fs, path_row.trash_ref)
    assert db_rows(select(RbdImage).where(RbdImage.id == image_row.id)) == []
    assert db_rows(select(CephfsPath).where(CephfsPath.id == path_row.id)) == []


# --- purge one trashed volume now (admins) ----------------------------------------------------------

def trash_ids(ioctx) -> set[str]:
    return {entry["id"] for entry in rbd.RBD().trash_list(ioctx)}


def trashed_image(admin, url: str, name: str) -> str:
    """An image made and deleted to the trash; its volume id."""
    made = admin.post(url, json={"name": name, "size_bytes": MiB})
    assert made.status_code == 201, made.json
    assert admin.delete(f"{url}/{name}").status_code == 204
    return made.json["id"]


def purge_now(api, url: str, name: str, volume_id: str):
    return api.post(f"{url}/{name}/purge", query_string={"id": volume_id})


def row_of(db_rows, model, volume_id):
    [row] = db_rows(select(model).where(model.id == volume_id))
    return row


def test_an_admin_purges_one_trashed_image_now_among_others_of_its_name(admin, new_project, rbd_ioctx, db_rows):
    """The trash holds two images of one name: the one named by its id goes from Ceph's trash now, with its trash
    mark; the other stays, restorable; the quota (released at the delete) is unaffected; the request is audited."""
    project = new_project()
    url, name = f"/api/v2/projects/{project}/rbd-images", unique("img")
    purged, kept = trashed_image(admin, url, name), trashed_image(admin, url, name)
    refs = {volume_id: row_of(db_rows, RbdImage, volume_id).trash_ref for volume_id in (purged, kept)}
    assert set(refs.values()) <= trash_ids(rbd_ioctx)
    usage = admin.get(f"/api/v2/projects/{project}/usage").json
    assert (usage["provisioned_bytes"], usage["volumes"]) == (0, 0)

    answer = purge_now(admin, url, name, purged)
    assert answer.status_code == 204, answer.json
    assert refs[purged] not in trash_ids(rbd_ioctx) and refs[kept] in trash_ids(rbd_ioctx)
    assert rbd_ops._owner(rbd_ioctx, f"trash/{refs[purged]}") is None
    row = row_of(db_rows, RbdImage, purged)
    assert row.state is VolumeState.DELETED and row.purged_at is not None and row.trash_ref is None
    other = row_of(db_rows, RbdImage, kept)
    assert other.purged_at is None and other.trash_ref == refs[kept]
    after = admin.get(f"/api/v2/projects/{project}/usage").json
    assert (after["provisioned_bytes"], after["volumes"]) == (0, 0)
    trash = admin.get(url, query_string={"trashed": "true"}).json["items"]
    assert [item["id"] for item in trash] == [kept]
    [event] = db_rows(select(AuditEvent).where(AuditEvent.target == f"{url}/{name}/purge"))
    assert (event.outcome, event.status_code, event.project) == ("success", 204, project)
    gone = purge_now(admin, url, name, purged)
    assert gone.status_code == 404 and gone.json["error"]["code"] == "not_in_trash"
    assert admin.post(f"{url}/{name}/restore").status_code == 200  # the other one


def test_purge_now_refusals_change_nothing(admin, as_role, new_project, rbd_ioctx, db_rows):
    """A member's purge (403), an id that is no trashed volume of that name (404 not_in_trash: unknown, live,
    another name's, another project's) and no id (422): the trashed image stays in Ceph's trash, its row as it was,
    the live image in the pool."""
    project, elsewhere = new_project(), new_project()
    url, name, live = f"/api/v2/projects/{project}/rbd-images", unique("img"), unique("img")
    volume_id = trashed_image(admin, url, name)
    live_id = admin.post(url, json={"name": live, "size_bytes": MiB}).json["id"]
    before = row_of(db_rows, RbdImage, volume_id)

    refused = purge_now(as_role("member", project), url, name, volume_id)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    for path_name, given_id, where in ((name, str(uuid.uuid4()), url), (live, live_id, url), (live, volume_id, url),
                                      (name, volume_id, f"/api/v2/projects/{elsewhere}/rbd-images")):
        missing = purge_now(admin, where, path_name, given_id)
        assert missing.status_code == 404 and missing.json["error"]["code"] == "not_in_trash", missing.json
        assert missing.json["error"]["details"]["id"] == given_id
    no_id = admin.post(f"{url}/{name}/purge")
    assert no_id.status_code == 422 and "id" in no_id.json["error"]["details"]["fields"], no_id.json
    after = row_of(db_rows, RbdImage, volume_id)
    assert (after.state, after.purged_at, after.trash_ref, after.updated_at) == (
        before.state, before.purged_at, before.trash_ref, before.updated_at)
    assert before.trash_ref in trash_ids(rbd_ioctx) and live in rbd.RBD().list(rbd_ioctx)
    assert row_of(db_rows, RbdImage, live_id).state is VolumeState.AVAILABLE


def test_a_project_whose_trash_holds_volumes_is_deleted_once_the_refusal_s_requests_purged_them(admin, new_project,
                                                                                              rbd_ioctx, fs, db_rows):
    """The refusal names each trashed volume with its collection and id; the purge requests it points at empty the
    trash at once (an image and a CephFS path), and the project's delete then succeeds."""
    project = new_project()
    image, directory = unique("img"), unique("fs")
    images, paths = f"/api/v2/projects/{project}/rbd-images", f"/api/v2/projects/{project}/cephfs-paths"
    image_id = trashed_image(admin, images, image)
    path_id = admin.post(paths, json={"name": directory, "quota_bytes": MiB}).json["id"]
    assert admin.delete(f"{paths}/{directory}").status_code == 204
    image_ref, path_ref = row_of(db_rows, RbdImage, image_id).trash_ref, row_of(db_rows, CephfsPath, path_id).trash_ref
    assert image_ref in trash_ids(rbd_ioctx) and exists(fs, path_ref)

    refused = admin.delete(f"/api/v2/projects/{project}")
    assert refused.status_code == 409 and "/purge?id=" in refused.json["error"]["message"]
    trash = refused.json["error"]["details"]["trash"]
    assert sorted(trash, key=lambda volume: volume["collection"]) == [
        {"collection": "cephfs-paths", "name": directory, "id": path_id},
        {"collection": "rbd-images", "name": image, "id": image_id}]
    for volume in trash:
        answer = purge_now(admin, f"/api/v2/projects/{project}/{volume['collection']}", volume["name"], volume["id"])
        assert answer.status_code == 204, answer.json
    assert image_ref not in trash_ids(rbd_ioctx) and not exists(fs, path_ref)
    for model, volume_id in ((RbdImage, image_id), (CephfsPath, path_id)):
        row = row_of(db_rows, model, volume_id)
        assert row.purged_at is not None and row.trash_ref is None
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


def test_a_restore_racing_an_admins_purge_exactly_one_wins(app, admin_token, robin_url, admin, new_project, rbd_ioctx,
                                                          db_rows):
    """For each trashed image a restore and a purge, through robin's workers, at once: one wins, the other is told
    (404 not_in_trash or 409 state_changed), and Ceph holds what the row says."""
    project, count = new_project(), 6
    url = f"/api/v2/projects/{project}/rbd-images"
    names = [unique("img") for _ in range(count)]
    ids = {name: trashed_image(admin, url, name) for name in names}
    start, headers = threading.Barrier(2 * count), {"Authorization": f"Bearer {admin_token}"}

    def send(call):
        action, name = call
        start.wait()
        query = f"?id={ids[name]}" if action == "purge" else ""
        return call, requests.post(f"{robin_url}{url}/{name}/{action}{query}", headers=headers, timeout=60)

    calls = [(action, name) for name in names for action in ("restore", "purge")]
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = dict(pool.map(send, calls))
    in_pool = set(rbd.RBD().list(rbd_ioctx))
    for name in names:
        restored, purged = answers[("restore", name)], answers[("purge", name)]
        row = row_of(db_rows, RbdImage, ids[name])
        if restored.status_code == 200:
            assert purged.status_code in (404, 409), purged.text
            assert purged.json()["error"]["code"] in ("not_in_trash", "state_changed")
            assert row.state is VolumeState.AVAILABLE and row.purged_at is None and name in in_pool
        else:
            assert purged.status_code == 204, purged.text
            assert restored.status_code in (404, 409), restored.text
            assert restored.json()["error"]["code"] in ("not_in_trash", "state_changed")
            assert row.state is VolumeState.DELETED and row.purged_at is not None and row.trash_ref is None
            assert name not in in_pool
    assert not set(names) & trash_names(rbd_ioctx)
    live = sum(answers[("restore", name)].status_code == 200 for name in names)
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == live * MiB


def test_a_trashed_parent_is_purged_after_its_trashed_clone(admin, new_project, rbd_ioctx, db_rows):
    """Ceph keeps a parent's snapshot while a clone needs it, the clone in the trash too: the parent's purge is
    refused (409 volume_has_clones, naming the clone and its id) before anything changes; the clone's purge first,
    then the parent's."""
    project = new_project()
    url, parent, clone = f"/api/v2/projects/{project}/rbd-images", unique("parent"), unique("clone")
    parent_id = admin.post(url, json={"name": parent, "size_bytes": MiB}).json["id"]
    assert admin.post(f"{url}/{parent}/snapshots", json={"name": "base"}).status_code == 201
    made = admin.post(url, json={"name": clone, "source": {"image": parent, "snapshot": "base"}})
    assert made.status_code == 201, made.json
    clone_id = made.json["id"]
    assert admin.delete(f"{url}/{clone}").status_code == 204
    assert admin.delete(f"{url}/{parent}", query_string={"with_snapshots": "true"}).status_code == 204
    parent_ref = row_of(db_rows, RbdImage, parent_id).trash_ref

    refused = purge_now(admin, url, parent, parent_id)
    assert refused.status_code == 409, refused.json
    error = refused.json["error"]
    assert error["code"] == "volume_has_clones" and "purge them first" in error["message"]
    assert (error["details"]["clones"], error["details"]["clone_ids"]) == ([clone], [clone_id])
    row = row_of(db_rows, RbdImage, parent_id)
    assert row.purged_at is None and row.trash_ref == parent_ref and parent_ref in trash_ids(rbd_ioctx)

    assert purge_now(admin, url, clone, clone_id).status_code == 204
    assert purge_now(admin, url, parent, parent_id).status_code == 204
    assert not {parent, clone} & trash_names(rbd_ioctx)


def test_purge_now_on_an_unreachable_cluster_is_503_and_keeps_the_row(app, admin, new_project, rbd_ioctx, db_rows,
                                                                      request):
    """Ceph does not answer: 503 ceph_unavailable, the row back in the trash as it was (restorable, purged in due
    course); the same request succeeds once Ceph answers."""
    dead = request.getfixturevalue("dead_cluster")
    project = new_project()
    url, name = f"/api/v2/projects/{project}/rbd-images", unique("img")
    volume_id = trashed_image(admin, url, name)
    before = row_of(db_rows, RbdImage, volume_id)
    with app.app_context(), db.reading() as session:
        dead_id = session.scalar(select(CephCluster.id).where(CephCluster.name == dead))
    move_to = update(RbdImage.__table__).where(RbdImage.id == volume_id)
    try:
        with app.app_context(), db.writing() as connection:  # its purge now asks the dead cluster
            connection.execute(move_to.values(cluster_id=dead_id))
        refused = purge_now(admin, url, name, volume_id)
        assert refused.status_code == 503 and refused.json["error"]["code"] == "ceph_unavailable"
        row = row_of(db_rows, RbdImage, volume_id)
        assert (row.state, row.purged_at, row.trash_ref) == (VolumeState.DELETED, None, before.trash_ref)
    finally:
        with app.app_context(), db.writing() as connection:
            connection.execute(move_to.values(cluster_id=before.cluster_id))
    assert before.trash_ref in trash_ids(rbd_ioctx)
    assert purge_now(admin, url, name, volume_id).status_code == 204
    assert before.trash_ref not in trash_ids(rbd_ioctx)
