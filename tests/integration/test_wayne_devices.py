"""Wayne's device calls (/v1/device/...), replayed as its client makes them (`token` header, bodies without a
Content-Type, the DES-derived password), against robin (in-process, and the whole flow also under gunicorn) with a
real `robin gateway`, real SFTP (asyncssh), real mounts on this host and real Ceph. What was uploaded is read back
from Ceph through mounts of the tests' own."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from datetime import timedelta

import asyncssh
import pytest
import rbd
import requests
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from sqlalchemy import select

from robin.audit.models import AuditEvent
from robin.auth.identity import LOCAL_ADMIN
from robin.compat.wayne_v1.api import KINDS
from robin.db import db, utcnow
from robin.gateway import activation, mounting
from robin.gateway.models import GatewayAccount, VerifyState
from robin.volumes import service as volumes
from robin.volumes.models import CephfsPath, VolumeState
from tests.integration import test_wayne_v1 as v1
from tests.integration.test_snapshots import cephfs_snaps
from tests.integration.test_wayne_v1 import Wayne, new_image, new_user
from tests.support.gateway import running_gateway
from tests.support.mounts import rbd_filesystem
from tests.support.net import wait_until
from tests.support.server import running_server

pytestmark = pytest.mark.integration
# Wayne's client config `passwordDesKey`: any 8 bytes; this is the one the tests' Wayne uses.
DES_KEY = b"wayne-k8"
# The gateway's watcher reads the accounts every 0.5 s and ends the sessions they no longer allow. Nothing else
# ends an SFTP session (there is no idle timeout), so a cut session whose end the gateway logged for the expected
# reason was cut by the watcher for it: the wait for it is bounded only generously, for a loaded machine.
SESSION_CUT_BOUND_S = 60
VERIFY_DEADLINE_S = 120


def wayne_password(user: str) -> str:
    """base64(DES-CBC(user)), PKCS5 padding, key = IV = the 8-byte key: how Wayne derives the password it sends.
    TripleDES with the key three times over is single DES."""
    padder = padding.PKCS7(64).padder()
    plain = padder.update(user.encode()) + padder.finalize()
    encryptor = Cipher(TripleDES(DES_KEY * 3), modes.CBC(DES_KEY)).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


# --- fixtures -----------------------------------------------------------------------------------

# Wayne with a member token of a fresh platform project, as in test_wayne_v1.
point_wayne_at, project, wayne = v1.point_wayne_at, v1.project, v1.wayne
wayne_as_admin, theirs = v1.wayne_as_admin, v1.theirs


@pytest.fixture(scope="module")
def gateway(database_url, tmp_path_factory):
    with running_gateway(database_url, str(tmp_path_factory.mktemp("gateway"))) as running:
        yield running


@pytest.fixture()
def gateway_dir(gateway):
    """Where the gateway's agent mounts this test's activations, checked empty of mounts at the end (the device
    fixture deactivated them, and a deactivation answers once the agent unmounted)."""
    yield gateway.directory
    assert not mounts_under(gateway.directory), "left mounted"


def mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo") as table:
        return [line for line in table if os.path.realpath(directory) in line]


@pytest.fixture()
def device(wayne, gateway, gateway_dir):
    """device(kind) -> a new volume's name; deactivated at the end whatever the test did."""
    made = []

    def create(kind: str) -> str:
        name = new_image(wayne, kind)["name"]
        made.append((kind, name))
        return name

    yield create
    for kind, name in made:
        wayne.delete(f"/v1/device/{name}?type={kind}")


def connect(gateway, user: str, password: str):
    return asyncssh.connect("127.0.0.1", gateway.port, username=user, password=password, known_hosts=None,
                            client_keys=None, agent_path=None, config=None, preferred_auth="password")


def activate(wayne: Wayne, kind: str, name: str, user: str) -> dict:
    reply = wayne.put(f"/v1/device/{name}?type={kind}", {"user": user, "password": wayne_password(user)})
    assert reply.status == 200, reply.text
    assert "Mount" in reply.json["status"], reply.json
    return reply.json


def status(wayne: Wayne, kind: str, name: str) -> dict:
    reply = wayne.get(f"/v1/device/{name}/status?type={kind}")
    assert reply.status == 200, reply.text
    return reply.json


def deactivate(wayne: Wayne, kind: str, name: str) -> None:
    reply = wayne.delete(f"/v1/device/{name}?type={kind}")
    assert reply.status == 200 and reply.json["status"] == [], reply.text


def verified(wayne: Wayne, kind: str, name: str) -> dict:
    reply = wayne.get(f"/v1/device/{name}/verify?type={kind}")
    assert reply.status == 200 and "Verifying" in reply.json["status"], reply.text
    wait_until(lambda: "Verifying" not in status(wayne, kind, name)["status"], VERIFY_DEADLINE_S, "the check")
    return status(wayne, kind, name)


async def upload(gateway, user: str, path: str, data: bytes) -> None:
    async with connect(gateway, user, wayne_password(user)) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(path, "wb") as handle:
            await handle.write(data)


async def download(gateway, user: str, path: str) -> bytes:
    async with connect(gateway, user, wayne_password(user)) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(path, "rb") as handle:
            return await handle.read()


# --- Wayne's whole flow, both types, in-process and against robin under gunicorn ----------------------

class _HttpClient:
    """What Wayne's client does on the wire, through `requests`, in the Flask test client's shape that `Wayne`
    drives: a body is sent as bytes with no Content-Type, as beego's httplib sends it."""

    class _Answer:
        def __init__(self, response):
            self.status_code = response.status_code
            self.mimetype = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            self._text = response.text

        def get_data(self, as_text: bool = False):
            return self._text if as_text else self._text.encode()

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.session = requests.Session()

    def open(self, path: str, method: str, data=None, headers=None):
        body = data.encode() if isinstance(data, str) else data
        return self._Answer(self.session.request(method, self.base_url + path, data=body, headers=headers,
                                                 timeout=120))


@pytest.fixture(params=["in-process", "gunicorn"])
def flow_wayne(request, wayne, project, gateway_dir, database_url, ceph_conf):
    """Wayne talking to the session's app in-process, or to `robin serve` (gunicorn) set up as in production:
    ROBIN_WAYNE_PROJECT in its environment, on the same database as the gateway's agent."""
    if request.param == "in-process":
        yield wayne
        return
    env = {"ROBIN_WAYNE_PROJECT": project, "ROBIN_MAINTENANCE_INTERVAL": "0"}
    with running_server(database_url, ceph_conf, workers=1, extra_env=env) as url:
        yield Wayne(_HttpClient(url), wayne.token)


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_wayne_device_flow(kind, flow_wayne, project, device, gateway, admin, db_rows, ceph_conf, fs):
    wayne = flow_wayne
    name, user = device(kind), new_user()
    assert name in {image["name"] for image in wayne.get(f"/v1/images?type={kind}").json["images"]}
    assert status(wayne, kind, name)["status"] == []
    activate(wayne, kind, name, user)
    activate(wayne, kind, name, user)  # again: the same mount, the password set anew
    data = os.urandom(200_000)
    asyncio.run(_transfer_and_escape(gateway, user, data))
    collection = "rbd-images" if kind == "rbd" else "cephfs-paths"
    refused = admin.delete(f"/api/v2/projects/{project}/{collection}/{name}")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "volume_activated"
    asyncio.run(_forced_offline(wayne, gateway, kind, name, user))
    activate(wayne, kind, name, user)  # allowed again
    assert "LoginForbidden" not in status(wayne, kind, name)["status"]
    checked = verified(wayne, kind, name)
    assert "VerifyOk" in checked["status"] and "Mount" in checked["status"], checked
    assert checked["msg"] == {"rbd": "e2fsck -n -f found no errors",
                              "cephfs": f"the metadata scrub of /robin/{project}/{name} found no damage"}[kind]
    deactivate(wayne, kind, name)
    assert wayne.delete(f"/v1/device/{name}?type={kind}").json["msg"] == f"{name} was not activated"
    assert _in_ceph(kind, name, project, ceph_conf, fs) == data
    actions = {event.action for event in db_rows(select(AuditEvent).where(AuditEvent.target.like(f"%/{name}%")))}
    assert {"PUT /v1/device/<name>", "DELETE /v1/device/<name>/user", "GET /v1/device/<name>/verify",
            "DELETE /v1/device/<name>"} <= actions


async def _transfer_and_escape(gateway, user: str, data: bytes) -> None:
    async with connect(gateway, user, wayne_password(user)) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("dir")
        async with sftp.open("dir/data.bin", "wb") as handle:
            await handle.write(data)
        async with sftp.open("/dir/data.bin", "rb") as handle:
            assert await handle.read() == data
        assert "etc" not in await sftp.listdir("/../..")  # ".." at the root stays at the root
        for escape in ("/../../etc/passwd", "../etc/hostname", "/proc/self/environ"):
            with pytest.raises(asyncssh.SFTPError):
                await sftp.stat(escape)
        await sftp.symlink("/etc/passwd", "link")  # a link that points out leads nowhere
        with pytest.raises(asyncssh.SFTPError):
            async with sftp.open("link", "rb") as handle:
                await handle.read()
        await sftp.remove("link")


async def _forced_offline(wayne: Wayne, gateway, kind: str, name: str, user: str) -> None:
    async with connect(gateway, user, wayne_password(user)) as conn, conn.start_sftp_client() as sftp:
        await sftp.listdir("/")
        reply = await asyncio.to_thread(wayne.delete, f"/v1/device/{name}/user?type={kind}")
        assert reply.status == 200 and "LoginForbidden" in reply.json["status"], reply.text
        await session_cut(conn, gateway, user, "login is forbidden")
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(gateway, user, wayne_password(user)):
            pass


async def session_cut(conn: asyncssh.SSHClientConnection, gateway, user: str, reason: str) -> None:
    """The gateway ends `user`'s session `conn`, saying `reason` in its log."""
    await asyncio.wait_for(conn.wait_closed(), SESSION_CUT_BOUND_S)
    assert (user, reason) in ended_sessions(gateway), gateway.log()[-4000:]


def ended_sessions(gateway) -> list[tuple[str, str]]:
    """(user, reason) of every session the gateway's watcher ended, from its JSON log."""
    records = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    return [(r.get("user"), r.get("reason")) for r in records if r.get("message") == "gateway session ended"]


def _in_ceph(kind: str, name: str, project: str, ceph_conf: str, fs) -> bytes:
    if kind == "cephfs":
        path = f"/robin/{project}/{name}/dir/data.bin"
        handle = fs.open(path, "r")
        try:
            return fs.read(handle, 0, 1 << 20)
        finally:
            fs.close(handle)
    with rbd_filesystem(ceph_conf, "rbd", name, mkfs=False) as mounted, \
            open(os.path.join(mounted, "dir", "data.bin"), "rb") as landed:
        return landed.read()


# --- RBD: snapshots around activation, a corrupted file system, an image in use ---------------------

def test_snapshot_rollback_brings_back_what_was_uploaded(wayne, device, gateway):
    name, user = device("rbd"), new_user()
    activate(wayne, "rbd", name, user)
    asyncio.run(upload(gateway, user, "state.txt", b"old"))
    deactivate(wayne, "rbd", name)  # a snapshot of an unmounted file system is a clean one
    assert wayne.put(f"/v1/snap/{name}/v1").status == 200
    activate(wayne, "rbd", name, user)
    asyncio.run(upload(gateway, user, "state.txt", b"new"))
    rollback_refused = wayne.post(f"/v1/snap/{name}/v1")
    assert rollback_refused.status == 409 and rollback_refused.text.startswith("volume_in_use: "), rollback_refused
    deactivate(wayne, "rbd", name)
    assert wayne.post(f"/v1/snap/{name}/v1").status == 200
    activate(wayne, "rbd", name, user)
    assert asyncio.run(download(gateway, user, "state.txt")) == b"old"
    assert wayne.put(f"/v1/snap/{name}/v2").status == 200  # taken while mounted: allowed
    assert [snap["name"] for snap in wayne.get(f"/v1/snaps/{name}").json["snaps"]] == ["v1", "v2"]
    assert wayne.delete(f"/v1/snap/{name}/v1").json["name"] == "v1"
    assert [snap["name"] for snap in wayne.delete(f"/v1/snaps/{name}").json["deleted"]] == ["v2"]
    assert wayne.get(f"/v1/snaps/{name}").json["snaps"] == []
    deactivate(wayne, "rbd", name)


def _corrupt_block_bitmap(ioctx, name: str) -> None:
    """Zero group 0's block bitmap: the file system still mounts (bitmaps are read when blocks are allocated),
    and e2fsck finds the blocks in use marked free."""
    with rbd.Image(ioctx, name) as image:
        superblock = image.read(1024, 1024)
        first_data_block, log_block_size = struct.unpack_from("<II", superblock, 20)
        block_size = 1024 << log_block_size
        descriptor = image.read((first_data_block + 1) * block_size, 64)
        bitmap_block = struct.unpack_from("<I", descriptor, 0)[0]
        image.write(b"\0" * block_size, bitmap_block * block_size)


def test_verify_fails_on_a_corrupted_file_system(wayne, device, gateway, rbd_ioctx):
    name, user = device("rbd"), new_user()
    activate(wayne, "rbd", name, user)
    asyncio.run(upload(gateway, user, "data.bin", os.urandom(300_000)))
    deactivate(wayne, "rbd", name)
    _corrupt_block_bitmap(rbd_ioctx, name)
    activate(wayne, "rbd", name, user)
    checked = verified(wayne, "rbd", name)
    assert "VerifyFailed" in checked["status"] and "e2fsck -n -f exited with 4" in checked["msg"], checked
    print(checked["msg"])
    assert not [snap for snap in rbd.Image(rbd_ioctx, name, read_only=True).list_snaps()]  # its snapshot is gone


def test_an_rbd_image_a_node_uses_is_not_activated(wayne, device, rbd_ioctx):
    name = device("rbd")
    with rbd.Image(rbd_ioctx, name) as image:
        image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
        reply = wayne.put(f"/v1/device/{name}?type=rbd", {"user": new_user(), "password": "pw"})
    assert reply.status == 409 and reply.text.startswith("volume_in_use: "), reply.text
    assert status(wayne, "rbd", name)["status"] == []


def test_verify_needs_an_activated_volume(wayne, device):
    name = device("cephfs")
    reply = wayne.get(f"/v1/device/{name}/verify?type=cephfs")
    assert reply.status == 404 and reply.text.startswith("account_not_found: "), reply.text


def test_mount_layout_is_under_the_gateway_dir(wayne, device, gateway_dir):
    name, user = device("cephfs"), new_user()
    activate(wayne, "cephfs", name, user)
    mounted = [path for path in os.listdir(os.path.join(gateway_dir, "volumes"))]
    assert len(mounted) == 1 and mounting.is_mounted(os.path.join(os.path.realpath(gateway_dir), "volumes",
                                                                  mounted[0]))
    deactivate(wayne, "cephfs", name)
    assert os.listdir(os.path.join(gateway_dir, "volumes")) == []


def test_a_check_that_died_shows_as_failed(app, wayne, device):
    """A process that crashed mid-check leaves `verifying` behind: after an hour it reads as failed, and may
    start again."""
    name, user = device("cephfs"), new_user()
    activate(wayne, "cephfs", name, user)
    with app.app_context(), db.unit_of_work() as session:
        account = session.scalar(select(GatewayAccount).where(GatewayAccount.username == user))
        account.verify_state, account.verified_at = VerifyState.VERIFYING, utcnow() - timedelta(hours=2)
    shown = status(wayne, "cephfs", name)
    assert "VerifyFailed" in shown["status"] and "never finished" in shown["msg"], shown
    assert "VerifyOk" in verified(wayne, "cephfs", name)["status"]


# --- tenant isolation: device calls act on the platform's project only ------------------------------

@pytest.fixture()
def deactivated_at_end(app, gateway_dir):
    """deactivated_at_end(kind, project, name): that volume has no account and no mount after the test, also when
    a call the test expects refused went through."""
    watched = []
    yield lambda kind, project, name: watched.append((KINDS[kind], project, name))
    with app.app_context():
        for kind, project, name in watched:
            activation.deactivate(volumes.get(LOCAL_ADMIN, kind, project, name))


def cephfs_path_state(fs, db_rows, name: str) -> dict:
    """What must stay as it was of another project's CephFS path: its quota and snapshots in Ceph, its row and
    no gateway account in robin's database."""
    [row] = db_rows(select(CephfsPath).where(CephfsPath.name == name, CephfsPath.state != VolumeState.DELETED))
    accounts = db_rows(select(GatewayAccount).where(GatewayAccount.cephfs_path_id == row.id))
    return {"quota": fs.getxattr(row.path, "ceph.quota.max_bytes"), "snaps": cephfs_snaps(fs, row.path),
            "row": (row.project_id, row.state, row.size_bytes, row.updated_at),
            "accounts": [account.username for account in accounts]}


def test_v1_device_ops_confined_to_wayne_project(wayne, wayne_as_admin, project, theirs, deactivated_at_end,
                                                 gateway_dir, rbd_ioctx, fs, db_rows):
    """/v1 is the platform's contract for its own project: a volume of any other project is not found there,
    for the platform's member token and for an admin's alike; nothing of it is rolled back, mounted, checked,
    or given an account."""
    elsewhere, image, path = theirs
    deactivated_at_end("rbd", elsewhere, image)
    deactivated_at_end("cephfs", elsewhere, path)
    image_before = v1.rbd_image_state(rbd_ioctx, db_rows, image)
    path_before = cephfs_path_state(fs, db_rows, path)

    for caller in (wayne_as_admin, wayne):
        v1.assert_answered_as_missing(caller, "rbd", image, new_user(), [elsewhere, project])
        v1.assert_answered_as_missing(caller, "cephfs", path, new_user(), [elsewhere, project])

    assert not mounts_under(gateway_dir)
    assert v1.rbd_image_state(rbd_ioctx, db_rows, image) == image_before  # still `after!`: not rolled back
    assert cephfs_path_state(fs, db_rows, path) == path_before
