"""RBD clones (format 2) and flatten, checked in Ceph: parent links, data, hidden temporary snapshots."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import rados
import rbd
import requests
from sqlalchemy import create_engine, select, text, update

from robin.db import db, normalize_url
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import Api, unique

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30


@pytest.fixture()
def project(new_project):
    return new_project(max_bytes=GiB, max_snapshots=10)


def images(project):
    return f"/api/v2/projects/{project}/rbd-images"


def make_parent(admin, project, data: bytes, size=128 * MiB) -> str:
    name = unique("parent")
    assert admin.post(images(project), json={"name": name, "size_bytes": size}).status_code == 201
    return name


def write(ioctx, name, data: bytes) -> None:
    with rbd.Image(ioctx, name) as image:
        image.write(data, 0)


def read(ioctx, name, length: int) -> bytes:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return image.read(0, length)


def parent_of(ioctx, name):
    with rbd.Image(ioctx, name, read_only=True) as image:
        try:
            spec = image.get_parent_image_spec()
        except rbd.ImageNotFound:
            return None
        return spec["image_name"], spec["snap_name"]


def user_snapshots(ioctx, name) -> set[str]:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return {s["name"] for s in image.list_snaps() if s.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER)
                == rbd.RBD_SNAP_NAMESPACE_TYPE_USER}


def test_clone_from_a_snapshot(admin, project, rbd_ioctx, db_rows):
    parent = make_parent(admin, project, b"")
    write(rbd_ioctx, parent, b"golden image")
    assert admin.post(f"{images(project)}/{parent}/snapshots", json={"name": "gold"}).status_code == 201
    write(rbd_ioctx, parent, b"changed later")
    child = unique("child")
    response = admin.post(images(project), json={"name": child, "source": {"image": parent, "snapshot": "gold"}})
    assert response.status_code == 201, response.json
    assert response.json["parent"] == {"image": parent, "snapshot": "gold"}
    assert response.json["size_bytes"] == 128 * MiB
    assert parent_of(rbd_ioctx, child) == (parent, "gold")
    assert read(rbd_ioctx, child, 12) == b"golden image"
    [row] = db_rows(select(RbdImage).where(RbdImage.name == child))
    assert row.parent_id is not None and row.parent_snapshot == "gold"
    # Counted at full size, although it shares its blocks.
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == 256 * MiB


def test_clone_of_the_current_state_hides_its_temporary_snapshot(admin, project, rbd_ioctx):
    parent = make_parent(admin, project, b"")
    write(rbd_ioctx, parent, b"as of now")
    child = unique("child")
    response = admin.post(images(project), json={"name": child, "source": {"image": parent},
                                                 "size_bytes": 256 * MiB})
    assert response.status_code == 201, response.json
    assert response.json["parent"]["image"] == parent
    assert response.json["parent"]["snapshot"].startswith("robin-clone-")
    assert read(rbd_ioctx, child, 9) == b"as of now"
    with rbd.Image(rbd_ioctx, child, read_only=True) as image:
        assert image.size() == 256 * MiB
    assert user_snapshots(rbd_ioctx, parent) == set()
    assert admin.get(f"{images(project)}/{parent}/snapshots").json["items"] == []


def test_parent_with_clones_cannot_be_deleted_until_flattened(admin, project, rbd_ioctx):
    parent = make_parent(admin, project, b"")
    write(rbd_ioctx, parent, b"shared")
    child = unique("child")
    assert admin.post(images(project), json={"name": child, "source": {"image": parent}}).status_code == 201
    refused = admin.delete(f"{images(project)}/{parent}")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "volume_has_clones"
    assert refused.json["error"]["details"]["clones"] == [child]
    flat = admin.post(f"{images(project)}/{child}/flatten")
    assert flat.status_code == 200 and flat.json["parent"] is None
    assert parent_of(rbd_ioctx, child) is None
    assert admin.delete(f"{images(project)}/{parent}").status_code == 204
    assert parent not in rbd.RBD().list(rbd_ioctx)
    assert read(rbd_ioctx, child, 6) == b"shared"


def test_clone_beyond_the_quota_is_refused_and_leaves_nothing(admin, new_project, rbd_ioctx):
    project = new_project(max_bytes=768 * MiB)
    parent = make_parent(admin, project, b"", size=512 * MiB)
    child = unique("child")
    response = admin.post(images(project), json={"name": child, "source": {"image": parent}})
    assert response.status_code == 403 and response.json["error"]["code"] == "quota_exceeded"
    assert child not in rbd.RBD().list(rbd_ioctx)
    assert user_snapshots(rbd_ioctx, parent) == set()


@pytest.mark.parametrize("source, size, status", [
    ({"image": "missing"}, None, 404),
    ({"snapshot": "x"}, None, 422),
    ({"image": "PARENT", "snapshot": "missing"}, None, 404),
    ({"image": "PARENT"}, MiB, 422),
])
def test_bad_clone_requests(admin, project, rbd_ioctx, source, size, status):
    parent = make_parent(admin, project, b"")
    source = {key: (parent if value == "PARENT" else value) for key, value in source.items()}
    body = {"name": unique("child"), "source": source} | ({"size_bytes": size} if size else {})
    response = admin.post(images(project), json=body)
    assert response.status_code == status, response.json
    assert body["name"] not in rbd.RBD().list(rbd_ioctx)


# --- attack: a clone's source picked by name on another cluster -----------------------------------

@pytest.fixture(scope="module")
def second_rbd_ioctx(second_cluster):
    cluster = rados.Rados(conffile=str(second_cluster.conf_path))
    cluster.connect(timeout=10)
    ioctx = cluster.open_ioctx("rbd")
    yield ioctx
    ioctx.close()
    cluster.shutdown()


@pytest.fixture()
def second_cluster_name(admin, registered, second_cluster):
    """The second dev cluster, registered; the projects put in `made` are emptied and deleted after
    (clones first), so that it can be unregistered."""
    made: list[str] = []
    name = registered(conf_path=str(second_cluster.conf_path), keyring_path=str(second_cluster.keyring_path))
    yield name, made
    for project in made:
        listed = admin.get(images(project)).json["items"]
        for image in sorted(listed, key=lambda item: item["parent"] is None):
            admin.delete(f"{images(project)}/{image['name']}",
                         query_string={"purge": "true", "with_snapshots": "true"})
        assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


def snapshots_and_children(ioctx, name) -> tuple[list, list]:
    """Every snapshot (hidden ones of clone format 2 included) and every clone child of the image."""
    with rbd.Image(ioctx, name, read_only=True) as image:
        return [s["name"] for s in image.list_snaps()], list(image.list_children2())


@pytest.mark.parametrize("parent_on_second, asked_cluster", [(False, "second"), (True, None)],
                         ids=["cluster-named-in-request", "parent-on-the-other-cluster"])
def test_cross_cluster_clone_never_reaches_another_projects_image(admin, new_project, second_cluster_name,
                                                                  rbd_ioctx, second_rbd_ioctx, db_rows,
                                                                  parent_on_second, asked_cluster):
    """The attacker's project and the victim's each own an image called `src`, on different clusters.
    A clone of the attacker's `src` is made from it, on its cluster, or refused: never from the victim's."""
    second, made = second_cluster_name
    attacker, victim = new_project(max_bytes=GiB), new_project(max_bytes=GiB)
    made += [attacker, victim]
    src = unique("src")
    on_second = {"cluster": second}
    assert admin.post(images(attacker), json={"name": src, "size_bytes": 8 * MiB,
                                              **(on_second if parent_on_second else {})}).status_code == 201
    assert admin.post(images(victim), json={"name": src, "size_bytes": 8 * MiB,
                                            **({} if parent_on_second else on_second)}).status_code == 201
    attacker_ioctx, victim_ioctx = (second_rbd_ioctx, rbd_ioctx) if parent_on_second else (rbd_ioctx, second_rbd_ioctx)
    write(attacker_ioctx, src, b"attacker's own")
    write(victim_ioctx, src, b"victim secrets")
    usage_before = {p: admin.get(f"/api/v2/projects/{p}/usage").json["provisioned_bytes"] for p in made}

    child = unique("child")
    body = {"name": child, "source": {"image": src}} | ({"cluster": second} if asked_cluster else {})
    response = admin.post(images(attacker), json=body)

    assert snapshots_and_children(victim_ioctx, src) == ([], [])
    assert read(victim_ioctx, src, 14) == b"victim secrets"
    assert admin.get(f"/api/v2/projects/{victim}/usage").json["provisioned_bytes"] == usage_before[victim]
    if asked_cluster:
        assert response.status_code == 422, response.json
        assert response.json["error"]["code"] == "clone_placement"
        assert "cluster" in response.json["error"]["details"]["fields"]
        assert db_rows(select(RbdImage).where(RbdImage.name == child)) == []
        assert admin.get(f"/api/v2/projects/{attacker}/usage").json["provisioned_bytes"] == usage_before[attacker]
        assert child not in rbd.RBD().list(rbd_ioctx) and child not in rbd.RBD().list(second_rbd_ioctx)
    else:
        # A clone of one's own image on another cluster is made there, from that image.
        assert response.status_code == 201, response.json
        assert response.json["cluster"] == second
        assert read(second_rbd_ioctx, child, 14) == b"attacker's own"
        assert child not in rbd.RBD().list(rbd_ioctx)


def test_flatten_racing_delete_never_resurrects_the_row(admin, admin_token, robin_url, project, rbd_ioctx, db_rows):
    """Flattens and deletes of the same clones at once, in robin's gunicorn workers; the deletes
    retry while the clone is busy, as a client would, so each lands as soon as it can: when the
    flatten's last write comes after it, the row must not come back."""
    parent = make_parent(admin, project, b"")
    with rbd.Image(rbd_ioctx, parent) as image:
        image.write(b"x" * (8 * MiB), 0)
    clones = [unique("child") for _ in range(4)]
    for clone in clones:
        assert admin.post(images(project), json={"name": clone, "source": {"image": parent}}).status_code == 201
    headers = {"Authorization": f"Bearer {admin_token}"}

    def flatten(clone):
        return requests.post(f"{robin_url}{images(project)}/{clone}/flatten", headers=headers, timeout=60)

    def delete(clone):
        deadline = time.monotonic() + 60
        while True:
            answer = requests.delete(f"{robin_url}{images(project)}/{clone}", headers=headers, timeout=60)
            # Only robin's own state may hold a delete back: one that reached Ceph mid-flatten is the bug.
            busy = answer.status_code == 409 and answer.json()["error"]["code"] in ("volume_busy", "state_changed")
            if not busy or time.monotonic() > deadline:
                return answer

    with ThreadPoolExecutor(2 * len(clones)) as pool:
        flattens = [pool.submit(flatten, clone) for clone in clones]
        deletes = [pool.submit(delete, clone) for clone in clones]
        flattens, deletes = [f.result() for f in flattens], [d.result() for d in deletes]
    trash = {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    for clone, flattened, deleted in zip(clones, flattens, deletes, strict=True):
        assert deleted.status_code == 204, deleted.text
        [row] = db_rows(select(RbdImage).where(RbdImage.name == clone))
        assert row.state is VolumeState.DELETED and row.trash_ref, (clone, row.state, flattened.text)
        assert clone not in rbd.RBD().list(rbd_ioctx) and clone in trash
        assert flattened.status_code in (200, 404, 409), flattened.text


@pytest.mark.parametrize("state", [SnapshotState.CREATING, SnapshotState.DELETING, SnapshotState.ERROR])
def test_clone_of_a_snapshot_not_available_is_refused_and_leaves_nothing(admin, project, rbd_ioctx, db_rows, state):
    """A snapshot still being made may not be in Ceph yet, one being deleted may go any moment: only an available one
    is cloned, as only an available one is rolled back to."""
    parent = make_parent(admin, project, b"")
    assert admin.post(f"{images(project)}/{parent}/snapshots", json={"name": "s"}).status_code == 201
    [parent_row] = db_rows(select(RbdImage).where(RbdImage.name == parent))
    with db.writing() as connection:
        connection.execute(update(Snapshot).where(Snapshot.rbd_image_id == parent_row.id).values(state=state))
    usage_before = admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"]
    child = unique("child")
    refused = admin.post(images(project), json={"name": child, "source": {"image": parent, "snapshot": "s"}})
    assert refused.status_code == 409, refused.json
    assert refused.json["error"]["code"] == "snapshot_busy"
    assert refused.json["error"]["details"] == {"state": state.value}
    assert child not in rbd.RBD().list(rbd_ioctx)
    assert db_rows(select(RbdImage).where(RbdImage.name == child)) == []
    assert admin.get(f"/api/v2/projects/{project}/usage").json["provisioned_bytes"] == usage_before


def _waiting_backends(connection) -> int:
    """Backends of this database waiting for a lock another transaction holds."""
    count = connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock'")).scalar()
    connection.rollback()  # the server's statistics are kept for the transaction: a fresh look next time
    return count


def _until(condition, what: str, limit_s: float = 60):
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_a_clone_racing_its_parents_delete_never_leaves_a_live_clone_of_a_trashed_parent(app, admin_token, project,
                                                                                        rbd_ioctx, db_rows,
                                                                                        backend, database_url):
    """The delete checks the parent for clones, then claims it. Held between the two (here: the parent's row locked
    by another transaction, which the claim's UPDATE waits for), a clone's reservation must not slip in: the delete
    holds the project's lock, as the reservation takes it, so the clone waits and then finds the parent going."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises every write transaction with its database lock")
    admin = Api(app.test_client(), admin_token)
    parent = make_parent(admin, project, b"")
    [parent_row] = db_rows(select(RbdImage).where(RbdImage.name == parent))
    child = unique("child")
    engine = create_engine(normalize_url(database_url))
    try:
        with ThreadPoolExecutor(2) as pool, engine.connect() as holder, engine.connect() as watcher:
            holder.execute(text("SELECT id FROM rbd_images WHERE id = :id FOR NO KEY UPDATE"), {"id": parent_row.id})
            # NO KEY UPDATE, the lock of the claim's UPDATE: a clone's foreign key to the parent does not wait for it.
            deleted = pool.submit(lambda: Api(app.test_client(), admin_token).delete(f"{images(project)}/{parent}"))
            _until(lambda: _waiting_backends(watcher) == 1 or deleted.done(), "the delete waits for the parent's row")
            cloned = pool.submit(lambda: Api(app.test_client(), admin_token).post(images(project), json={
                "name": child, "source": {"image": parent}}))
            # Before the fix the clone went through here; now it waits for the delete's project lock.
            _until(lambda: _waiting_backends(watcher) == 2 or cloned.done(), "the clone waits or is done")
            holder.rollback()
            deleted, cloned = deleted.result(), cloned.result()
    finally:
        engine.dispose()
    assert deleted.status_code == 204, deleted.json
    assert cloned.status_code in (404, 409), cloned.json
    assert child not in rbd.RBD().list(rbd_ioctx)
    assert db_rows(select(RbdImage).where(RbdImage.name == child)) == []
    [row] = db_rows(select(RbdImage).where(RbdImage.name == parent))
    assert row.state is VolumeState.DELETED and row.trash_ref
