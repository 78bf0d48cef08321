"""The Wayne platform's /v1 API, called exactly as Wayne's Robin client calls it (a `token` header,
JSON bodies sent without a Content-Type, no body on the snapshot calls), checked in Ceph and in
robin's database."""
from __future__ import annotations

import dataclasses
import json
from typing import NamedTuple

import pytest
import rbd
from sqlalchemy import select

from robin.audit.models import AuditEvent
from robin.auth.service import identity_for_secret
from robin.gateway.models import GatewayAccount
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.conftest import make_token, unique

pytestmark = pytest.mark.integration
MiB = 2**20


class Reply(NamedTuple):
    status: int
    json: object  # the parsed body of a 200
    text: str


class Wayne:
    """Wayne's client (beego httplib): any status but 200 is an error whose text is the body, and a
    200 body is parsed as JSON. Every call checks both, so every test checks them on every call."""

    def __init__(self, client, token: str | None):
        self.client = client
        self.token = token

    def call(self, method: str, path: str, body=None, headers: dict | None = None) -> Reply:
        sent = {"token": self.token} if self.token else {}
        sent.update(headers or {})
        data = json.dumps(body) if body is not None else None
        response = self.client.open(path, method=method, data=data, headers=sent)
        text = response.get_data(as_text=True)
        if response.status_code == 200:
            return Reply(200, json.loads(text), text)
        assert response.mimetype == "text/plain", text
        assert "\n" not in text and len(text) < 400 and ": " in text, text
        return Reply(response.status_code, None, text)

    def get(self, path, **kwargs):
        return self.call("GET", path, **kwargs)

    def put(self, path, body=None, **kwargs):
        return self.call("PUT", path, body, **kwargs)

    def post(self, path, **kwargs):
        return self.call("POST", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.call("DELETE", path, **kwargs)


@pytest.fixture()
def point_wayne_at(app, monkeypatch):
    """point_wayne_at(project): make it the platform's project (ROBIN_WAYNE_PROJECT) for one test.
    The session's app is shared, and create_app binds process-wide things (the database, the Ceph
    connections), so the setting is swapped in the app's config, where the services read it, and
    put back after the test; each test gets a fresh project with its own quota."""

    def point(project: str) -> str:
        changed = dataclasses.replace(app.config["ROBIN_SETTINGS"], wayne_project=project)
        monkeypatch.setitem(app.config, "ROBIN_SETTINGS", changed)
        return project

    return point


@pytest.fixture()
def project(new_project, point_wayne_at) -> str:
    return point_wayne_at(new_project())


@pytest.fixture()
def wayne(app, project) -> Wayne:
    """Wayne with a member token of its project: what an admin gives the platform."""
    return Wayne(app.test_client(), make_token(app, "member", project))


@pytest.fixture()
def wayne_as_admin(app, admin_token) -> Wayne:
    return Wayne(app.test_client(), admin_token)


def new_image(wayne: Wayne, kind: str = "rbd", size: int = 64) -> dict:
    reply = wayne.put(f"/v1/image?type={kind}", {"name": unique("w"), "size": size})
    assert reply.status == 200, reply.text
    return reply.json


def new_user() -> str:
    return unique("u").replace("-", "_")


def rbd_snaps(ioctx, name) -> set[str]:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return {snap["name"] for snap in image.list_snaps()}


# --- images -------------------------------------------------------------------------------------

def test_put_image_creates_an_rbd_image(wayne, project, rbd_ioctx, db_rows):
    name = unique("w")
    reply = wayne.put("/v1/image?type=rbd", {"name": name, "size": 64})
    assert reply.status == 200, reply.text
    assert reply.json | {"id": None, "created_at": None} == {
        "id": None, "name": name, "type": "rbd", "size": 64, "size_bytes": 64 * MiB, "project": project,
        "state": "available", "pool": "rbd", "created_at": None}
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == 64 * MiB
    [row] = db_rows(select(RbdImage).where(RbdImage.name == name))
    assert row.id == reply.json["id"] and row.project.name == project
    assert row.state is VolumeState.AVAILABLE and row.size_bytes == 64 * MiB


def test_put_image_creates_a_cephfs_path(wayne, project, fs, db_rows):
    name = unique("w")
    reply = wayne.put("/v1/image?type=cephfs", {"name": name, "size": 100})
    assert reply.status == 200, reply.text
    path = f"/robin/{project}/{name}"
    assert reply.json["type"] == "cephfs" and reply.json["size"] == 100 and reply.json["path"] == path
    assert fs.getxattr(path, "ceph.quota.max_bytes").decode() == str(100 * MiB)
    [row] = db_rows(select(CephfsPath).where(CephfsPath.name == name))
    assert row.project.name == project and row.state is VolumeState.AVAILABLE and row.size_bytes == 100 * MiB


def test_images_lists_each_type_the_token_may_read(wayne, wayne_as_admin, admin, new_project):
    image, path = new_image(wayne, "rbd"), new_image(wayne, "cephfs")
    elsewhere = new_project()
    # Not whole MiB: /v1 shows it rounded up, with the exact bytes beside.
    foreign = admin.post(f"/api/v2/projects/{elsewhere}/rbd-images",
                         json={"name": unique("v"), "size_bytes": 64 * MiB + 1}).json
    listed = {entry["name"]: entry for entry in wayne.get("/v1/images?type=all").json["images"]}
    assert listed[image["name"]]["type"] == "rbd" and listed[path["name"]]["type"] == "cephfs"
    assert foreign["name"] not in listed  # a member token reads its own project only
    assert {entry["type"] for entry in listed.values()} == {"rbd", "cephfs"}
    for kind, mine, other in (("rbd", image, path), ("cephfs", path, image)):
        names = {entry["name"] for entry in wayne.get(f"/v1/images?type={kind}").json["images"]}
        assert mine["name"] in names and other["name"] not in names
    everything = {entry["name"]: entry for entry in wayne_as_admin.get("/v1/images?type=all").json["images"]}
    assert everything[foreign["name"]] | {"id": None, "created_at": None} == {
        "id": None, "name": foreign["name"], "type": "rbd", "size": 65, "size_bytes": 64 * MiB + 1,
        "project": elsewhere, "state": "available", "pool": "rbd", "created_at": None}
    assert wayne.get("/v1/images?type=nfs").text.startswith("validation_error: ")


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_a_taken_name_is_refused_with_a_readable_error(wayne, kind):
    name = new_image(wayne, kind)["name"]
    reply = wayne.put(f"/v1/image?type={kind}", {"name": name, "size": 64})
    assert reply.status == 409 and reply.text.startswith("name_taken: ") and repr(name) in reply.text
    other_kind = "cephfs" if kind == "rbd" else "rbd"
    assert wayne.put(f"/v1/image?type={other_kind}", {"name": name, "size": 64}).status == 200  # unique per type


def test_quota_refusal_carries_robins_message(app, new_project, point_wayne_at, rbd_ioctx):
    project = point_wayne_at(new_project(max_bytes=100 * MiB))
    wayne = Wayne(app.test_client(), make_token(app, "member", project))
    new_image(wayne, "rbd", 64)
    name = unique("w")
    reply = wayne.put("/v1/image?type=rbd", {"name": name, "size": 64})
    assert (reply.status, reply.text) == (
        403, f"quota_exceeded: project '{project}' has {36 * MiB} bytes of quota left; {64 * MiB} were requested")
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert [entry["size"] for entry in wayne.get("/v1/images?type=all").json["images"]] == [64]


@pytest.mark.parametrize("body", [
    {"size": 0}, {"size": -5}, {"size": 1.5}, {"size": "64"}, {}, {"size": 2**31}, {"size": 64, "name": "bad/name"},
], ids=["zero", "negative", "fraction", "string", "missing", "above-maximum", "bad-name"])
def test_bad_input_is_refused_before_anything_exists(wayne, body):
    name = unique("w")
    reply = wayne.put("/v1/image?type=rbd", {"name": name} | body)
    assert reply.status == 422 and reply.text.startswith("validation_error: invalid input: ")
    assert ("name: " if "name" in body else "size: ") in reply.text
    assert name not in {entry["name"] for entry in wayne.get("/v1/images?type=all").json["images"]}


def test_tokens(app, wayne, new_project):
    image = new_image(wayne)["name"]
    anonymous = Wayne(app.test_client(), None)
    assert (anonymous.get("/v1/images?type=all").status, anonymous.get("/v1/images?type=all").text) == (
        401, "unauthenticated: send a robin API token in the 'token' header")
    assert anonymous.put("/v1/image?type=rbd", {"name": unique("w"), "size": 1}).status == 401
    wrong = Wayne(app.test_client(), "robin_not-a-token")
    assert (wrong.get(f"/v1/snaps/{image}").status, wrong.get(f"/v1/snaps/{image}").text) == (
        401, "unauthenticated: the API token is unknown or revoked")
    bearer = anonymous.get(f"/v1/snaps/{image}", headers={"Authorization": f"Bearer {wayne.token}"})
    assert bearer == Reply(200, {"snaps": []}, bearer.text)
    # Another project's member: the platform's volumes are not there for it, and it may not create any.
    outsider = Wayne(app.test_client(), make_token(app, "member", new_project()))
    refused = outsider.put(f"/v1/snap/{image}/s1")
    assert refused.status == 404 and refused.text.startswith("volume_not_found: ")
    created = outsider.put("/v1/image?type=rbd", {"name": unique("w"), "size": 1})
    assert created.status == 403 and created.text.startswith("forbidden: this token may not change project")


def test_a_missing_platform_project_is_named(wayne_as_admin, point_wayne_at):
    missing = point_wayne_at(unique("absent"))
    reply = wayne_as_admin.put("/v1/image?type=rbd", {"name": unique("w"), "size": 64})
    assert reply.status == 404 and reply.text.startswith(f"project_not_found: project '{missing}'")
    assert "ROBIN_WAYNE_PROJECT" in reply.text and "POST /api/v2/projects" in reply.text


# --- snapshots ----------------------------------------------------------------------------------

def test_snapshot_list_and_rollback_restore_the_data(wayne, rbd_ioctx, db_rows):
    name = new_image(wayne)["name"]
    with rbd.Image(rbd_ioctx, name) as handle:
        handle.write(b"before", 0)
    taken = wayne.put(f"/v1/snap/{name}/v1")
    assert taken.status == 200, taken.text
    [row] = db_rows(select(Snapshot).join(RbdImage, Snapshot.rbd_image_id == RbdImage.id)
                    .where(RbdImage.name == name))
    assert taken.json | {"created_at": None} == {
        "id": row.id, "name": "v1", "size": 64 * MiB, "state": "available", "created_at": None}
    assert rbd_snaps(rbd_ioctx, name) == {"v1"}
    with rbd.Image(rbd_ioctx, name) as handle:
        handle.write(b"after!", 0)
    listed = wayne.get(f"/v1/snaps/{name}").json["snaps"]
    assert [(snap["id"], snap["name"], snap["size"]) for snap in listed] == [(row.id, "v1", 64 * MiB)]
    rolled = wayne.post(f"/v1/snap/{name}/v1")
    assert rolled.status == 200 and rolled.json["name"] == "v1", rolled.text
    with rbd.Image(rbd_ioctx, name, read_only=True) as handle:
        assert handle.read(0, 6) == b"before"


def test_rollback_is_refused_while_the_image_is_in_use(wayne, rbd_ioctx):
    name = new_image(wayne)["name"]
    assert wayne.put(f"/v1/snap/{name}/v1").status == 200
    with rbd.Image(rbd_ioctx, name) as handle:
        handle.write(b"in use", 0)  # an open, written image: a watcher and the exclusive lock
        reply = wayne.post(f"/v1/snap/{name}/v1")
        assert reply.status == 409 and reply.text.startswith(f"volume_in_use: RBD image '{name}' is in use")
        assert handle.read(0, 6) == b"in use"


def test_delete_one_snapshot_then_all(wayne, rbd_ioctx, db_rows):
    name = new_image(wayne)["name"]
    for version in ("a", "b", "c"):
        assert wayne.put(f"/v1/snap/{name}/{version}").status == 200
    one = wayne.delete(f"/v1/snap/{name}/a")
    assert one.status == 200 and (one.json["name"], one.json["state"]) == ("a", "deleted"), one.text
    assert rbd_snaps(rbd_ioctx, name) == {"b", "c"}
    everything = wayne.delete(f"/v1/snaps/{name}")
    assert everything.status == 200, everything.text
    assert [snap["name"] for snap in everything.json["deleted"]] == ["b", "c"]
    assert rbd_snaps(rbd_ioctx, name) == set()
    assert wayne.get(f"/v1/snaps/{name}").json == {"snaps": []}
    rows = db_rows(select(Snapshot).join(RbdImage, Snapshot.rbd_image_id == RbdImage.id).where(RbdImage.name == name))
    assert {row.state for row in rows} == {SnapshotState.DELETED} and len(rows) == 3
    assert wayne.delete(f"/v1/snaps/{name}").json == {"deleted": []}
    again = wayne.delete(f"/v1/snap/{name}/a")
    assert again.status == 404 and again.text.startswith("snapshot_not_found: ")


def test_snapshot_errors_are_readable(app, wayne, new_project, point_wayne_at):
    missing = wayne.put(f"/v1/snap/{unique('nothing')}/v1")
    assert missing.status == 404 and missing.text.startswith("volume_not_found: RBD image ")
    path = new_image(wayne, "cephfs")["name"]
    assert wayne.get(f"/v1/snaps/{path}").text.startswith("volume_not_found: ")  # snapshots here are RBD only
    name = new_image(wayne)["name"]
    assert wayne.put(f"/v1/snap/{name}/v1").status == 200
    assert wayne.put(f"/v1/snap/{name}/v1").text.startswith("snapshot_exists: ")
    reserved = wayne.put(f"/v1/snap/{name}/robin-clone-x")
    assert reserved.status == 422 and reserved.text.startswith("validation_error: invalid input: version: ")
    limited = point_wayne_at(new_project(max_snapshots=1))
    wayne = Wayne(app.test_client(), make_token(app, "member", limited))
    name = new_image(wayne)["name"]
    assert wayne.put(f"/v1/snap/{name}/v1").status == 200
    refused = wayne.put(f"/v1/snap/{name}/v2")
    assert refused.status == 403 and refused.text.startswith(f"quota_exceeded: project '{limited}' may have 1 ")


# --- audit --------------------------------------------------------------------------------------

def test_mutations_are_audited_with_the_tokens_actor(app, wayne, project, db_rows):
    name = unique("w")
    assert wayne.put("/v1/image?type=rbd", {"name": name, "size": 64}).status == 200
    assert wayne.put("/v1/image?type=rbd", {"name": name, "size": 64}).status == 409
    assert wayne.put(f"/v1/snap/{name}/v1").status == 200
    assert wayne.post(f"/v1/snap/{name}/v1").status == 200
    assert wayne.delete(f"/v1/snaps/{name}").status == 200
    assert wayne.get(f"/v1/snaps/{name}").status == 200  # reads are not audited
    with app.app_context():
        actor = identity_for_secret(wayne.token).actor
    events = db_rows(select(AuditEvent).where(AuditEvent.target.in_(
        ["/v1/image", f"/v1/snap/{name}/v1", f"/v1/snaps/{name}"]), AuditEvent.actor == actor)
        .order_by(AuditEvent.id))
    assert [(e.action, e.project, e.status_code, e.outcome, e.error_code) for e in events] == [
        ("PUT /v1/image", project, 200, "success", None),
        ("PUT /v1/image", project, 409, "failure", "name_taken"),
        ("PUT /v1/snap/<name>/<version>", project, 200, "success", None),
        ("POST /v1/snap/<name>/<version>", project, 200, "success", None),
        ("DELETE /v1/snaps/<name>", project, 200, "success", None),
    ]
    assert events[0].details == {"request": {"name": name, "size": 64}}  # read although Wayne sends no Content-Type
    assert actor.startswith("token:")



# --- tenant isolation: /v1 acts on the platform's project only, and never says who owns a name ------------

def named_calls(kind: str, user: str) -> list[tuple[str, str, dict | None]]:
    """Every /v1 call that names a volume, as (method, path with {name}, body), in an order where a call that
    wrongly went through would do the most visible harm first (a rollback, then an activation)."""
    device = [("PUT", f"/v1/device/{{name}}?type={kind}", {"user": user, "password": "pw"}),
              ("GET", f"/v1/device/{{name}}/verify?type={kind}", None),
              ("GET", f"/v1/device/{{name}}/status?type={kind}", None),
              ("DELETE", f"/v1/device/{{name}}/user?type={kind}", None),
              ("DELETE", f"/v1/device/{{name}}?type={kind}", None)]
    if kind == "cephfs":
        return device
    snaps = [("POST", "/v1/snap/{name}/s1", None), ("PUT", "/v1/snap/{name}/probe", None),
             ("DELETE", "/v1/snap/{name}/s1", None), ("GET", "/v1/snaps/{name}", None),
             ("DELETE", "/v1/snaps/{name}", None)]
    return snaps[:1] + device + snaps[1:]


def answers(wayne: Wayne, kind: str, name: str, user: str):
    """Yield each named call and what Wayne got for `name`, the name itself replaced by <name>: the answers about
    two names compare byte for byte."""
    for method, path, body in named_calls(kind, user):
        reply = wayne.call(method, path.format(name=name), body)
        yield f"{method} {path}", (reply.status, reply.text.replace(name, "<name>"))


def assert_answered_as_missing(wayne: Wayne, kind: str, name: str, user: str, projects: list[str]) -> None:
    """Every named call about `name` answers exactly as about a name no volume has, and names no project."""
    missing = unique("w")
    pairs = zip(answers(wayne, kind, name, user), answers(wayne, kind, missing, user), strict=True)
    for (call, got), (_, expected) in pairs:
        assert got == expected, call
        assert got[0] == 404 and got[1].startswith("volume_not_found: "), (call, got)
        assert not [project for project in projects if project in got[1]], (call, got)


def rbd_image_state(rbd_ioctx, db_rows, name: str) -> dict:
    """What must stay as it was of another project's RBD image: in Ceph its data, snapshots and watchers
    (a mount or a mapping has one); in robin's database its row, its snapshots' rows, any gateway account."""
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        ceph = {"head": image.read(0, 6), "snaps": rbd_snaps(rbd_ioctx, name),
                "watchers": [watcher["addr"] for watcher in image.watchers_list()]}
    [row] = db_rows(select(RbdImage).where(RbdImage.pool == "rbd", RbdImage.name == name))
    snapshots = db_rows(select(Snapshot).where(Snapshot.rbd_image_id == row.id).order_by(Snapshot.name))
    accounts = db_rows(select(GatewayAccount).where(GatewayAccount.rbd_image_id == row.id))
    return ceph | {"row": (row.project_id, row.state, row.size_bytes, row.updated_at),
                   "snapshot_rows": [(s.name, s.state, s.updated_at) for s in snapshots],
                   "accounts": [account.username for account in accounts]}


@pytest.fixture()
def theirs(admin, new_project, rbd_ioctx):
    """Another project's RBD image (`before`, snapshot s1, then `after!` written) and CephFS path, made through
    /api/v2: (project, image name, path name)."""
    project, image, path = new_project(), unique("theirs"), unique("theirs")
    base = f"/api/v2/projects/{project}"
    assert admin.post(f"{base}/rbd-images", json={"name": image, "size_bytes": 64 * MiB}).status_code == 201
    assert admin.post(f"{base}/cephfs-paths", json={"name": path, "quota_bytes": 64 * MiB}).status_code == 201
    with rbd.Image(rbd_ioctx, image) as handle:
        handle.write(b"before", 0)
    assert admin.post(f"{base}/rbd-images/{image}/snapshots", json={"name": "s1"}).status_code == 201
    with rbd.Image(rbd_ioctx, image) as handle:
        handle.write(b"after!", 0)
    return project, image, path


def test_v1_does_not_reveal_other_projects(app, wayne, project, theirs, new_project, rbd_ioctx, db_rows):
    """A member asking /v1 about a volume it may not read learns nothing: not that the name exists, nor which
    project has it. Neither Wayne's member token asking about another project's volume, nor another project's
    member asking about the platform's."""
    elsewhere, their_image, their_path = theirs
    mine = new_image(wayne)["name"]
    outsider_project = new_project()
    outsider = Wayne(app.test_client(), make_token(app, "member", outsider_project))
    projects = [project, elsewhere, outsider_project]
    before = rbd_image_state(rbd_ioctx, db_rows, their_image)
    mine_before = rbd_image_state(rbd_ioctx, db_rows, mine)

    for caller, image in ((wayne, their_image), (outsider, their_image), (outsider, mine)):
        assert_answered_as_missing(caller, "rbd", image, new_user(), projects)
    for caller in (wayne, outsider):
        assert_answered_as_missing(caller, "cephfs", their_path, new_user(), projects)

    assert rbd_image_state(rbd_ioctx, db_rows, their_image) == before
    assert rbd_image_state(rbd_ioctx, db_rows, mine) == mine_before


@pytest.fixture()
def second_pool(app, rados_cluster, monkeypatch):
    """A second RBD pool robin places volumes in (ROBIN_RBD_POOLS), for this test only: where one name can
    belong to two projects on the default cluster."""
    pool = unique("pool")
    rados_cluster.create_pool(pool)
    try:
        with rados_cluster.open_ioctx(pool) as ioctx:
            rbd.RBD().pool_init(ioctx, False)
        settings = app.config["ROBIN_SETTINGS"]
        monkeypatch.setitem(app.config, "ROBIN_SETTINGS",
                            dataclasses.replace(settings, rbd_pools=(*settings.rbd_pools, pool)))
        yield pool
    finally:
        rados_cluster.delete_pool(pool)


def test_v1_does_not_reveal_other_projects_sharing_a_name(app, wayne, project, admin, new_project, second_pool,
                                                         rados_cluster, rbd_ioctx, db_rows):
    """One name, two projects (two pools): /v1 answers about the platform's volume and never lists the other
    project as an ambiguity."""
    elsewhere, name = new_project(), new_image(wayne)["name"]
    created = admin.post(f"/api/v2/projects/{elsewhere}/rbd-images",
                         json={"name": name, "size_bytes": 64 * MiB, "pool": second_pool})
    assert created.status_code == 201, created.json
    try:
        assert wayne.put(f"/v1/snap/{name}/mine").status == 200
        listed = wayne.get(f"/v1/snaps/{name}")
        assert listed.status == 200 and [snap["name"] for snap in listed.json["snaps"]] == ["mine"], listed.text
        outsider = Wayne(app.test_client(), make_token(app, "member", new_project()))
        assert_answered_as_missing(outsider, "rbd", name, new_user(), [project, elsewhere])
        with rados_cluster.open_ioctx(second_pool) as ioctx:
            assert rbd_snaps(ioctx, name) == set()  # the snapshot went to the platform's image only
        assert rbd_snaps(rbd_ioctx, name) == {"mine"}
    finally:
        admin.delete(f"/api/v2/projects/{elsewhere}/rbd-images/{name}?purge=true")


# --- CSI volume handles ----------------------------------------------------------------------------------------

def test_a_csi_volume_handle_names_the_platforms_volume_as_its_name_does(wayne, project, rbd_ioctx):
    """A CSI PV robin's provisioner made has no spec.rbd.image; its spec.csi.volumeHandle `<kind>:<project>:<name>`
    finds the same volume wherever /v1 takes a name."""
    name = new_image(wayne)["name"]
    handle = f"rbd:{project}:{name}"
    taken = wayne.put(f"/v1/snap/{handle}/v1")
    assert taken.status == 200 and taken.json["name"] == "v1", taken.text
    assert rbd_snaps(rbd_ioctx, name) == {"v1"}
    assert wayne.get(f"/v1/snaps/{handle}").json == wayne.get(f"/v1/snaps/{name}").json
    by_handle = wayne.get(f"/v1/device/{handle}/status?type=rbd")
    assert by_handle.status == 200 and by_handle.json == wayne.get(f"/v1/device/{name}/status?type=rbd").json
    assert wayne.delete(f"/v1/snap/{handle}/v1").json["state"] == "deleted"
    assert rbd_snaps(rbd_ioctx, name) == set()


def test_a_handle_of_another_project_or_kind_is_answered_as_missing(app, wayne, project, theirs, rbd_ioctx,
                                                                     db_rows):
    elsewhere, their_image, their_path = theirs
    mine, my_path = new_image(wayne)["name"], new_image(wayne, "cephfs")["name"]
    projects = [project, elsewhere]
    before = rbd_image_state(rbd_ioctx, db_rows, their_image)
    mine_before = rbd_image_state(rbd_ioctx, db_rows, mine)
    for handle in (f"rbd:{elsewhere}:{their_image}", f"cephfs:{project}:{mine}", f"rbd:{project}:{mine}:x",
                   f"rbd::{mine}"):
        assert_answered_as_missing(wayne, "rbd", handle, new_user(), projects)
    for handle in (f"cephfs:{elsewhere}:{their_path}", f"rbd:{project}:{my_path}"):
        assert_answered_as_missing(wayne, "cephfs", handle, new_user(), projects)
    assert rbd_image_state(rbd_ioctx, db_rows, their_image) == before
    assert rbd_image_state(rbd_ioctx, db_rows, mine) == mine_before
