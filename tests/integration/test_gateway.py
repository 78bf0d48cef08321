"""The data gateway: `robin gateway` as a real process on 127.0.0.1, a real SFTP client (asyncssh), accounts
made with the service on the session's database, each rooted at a real tmpfs mount.

Sessions are ended by changing the account's row from this (another) process, as the API will."""
from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass

import asyncssh
import pytest
from sqlalchemy import select

from robin.errors import Conflict, InvalidInput
from robin.gateway import service
from robin.gateway.models import GatewayAccount
from robin.gateway.server import HOST_KEY_NAME
from robin.volumes.models import CephfsPath, RbdImage
from tests.conftest import unique
from tests.support.gateway import running_gateway, tmpfs

pytestmark = pytest.mark.integration
MiB = 2**20
# The watcher polls twice a second; a session must be gone well within this.
CUT_DEADLINE_S = 2.0


@dataclass
class Account:
    volume: CephfsPath
    username: str
    password: str
    mount: str


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(database_url, tmp_path_factory):
    with running_gateway(database_url, str(tmp_path_factory.mktemp("gateway"))) as running:
        yield running


@pytest.fixture()
def make_volume(admin, new_project, db_rows):
    """make_volume("cephfs-paths" | "rbd-images") -> a new volume's row, created through the API."""
    project = new_project()

    def create(collection: str = "cephfs-paths"):
        size = {"cephfs-paths": {"quota_bytes": MiB}, "rbd-images": {"size_bytes": 4 * MiB}}[collection]
        created = admin.post(f"/api/v2/projects/{project}/{collection}", json={"name": unique("gw"), **size})
        assert created.status_code == 201, created.json
        model = CephfsPath if collection == "cephfs-paths" else RbdImage
        return db_rows(select(model).where(model.id == created.json["id"]))[0]

    return create


def new_username() -> str:
    return unique("u").replace("-", "_")


@pytest.fixture()
def account(app, make_volume):
    volume = make_volume()
    with tmpfs() as mount:
        username, password = new_username(), unique("pw")
        with app.app_context():
            service.activate(volume, username, password, mount)
        try:
            yield Account(volume, username, password, mount)
        finally:
            with app.app_context():
                service.remove(volume)


def connect(gateway, username: str, password: str):
    # No keys, agent or ~/.ssh/config of the machine: password only, as the gateway wants.
    return asyncssh.connect("127.0.0.1", gateway.port, username=username, password=password, known_hosts=None,
                            client_keys=None, agent_path=None, config=None, preferred_auth="password")


def login(gateway, account: Account):
    return connect(gateway, account.username, account.password)


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


async def session_ends(conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, started: float) -> None:
    """The gateway closes the connection within CUT_DEADLINE_S of `started`; the SFTP client is dead."""
    await asyncio.wait_for(conn.wait_closed(), CUT_DEADLINE_S - (time.monotonic() - started))
    with pytest.raises((asyncssh.SFTPError, asyncssh.ConnectionLost)):
        await sftp.listdir("/")


# --- transfers ----------------------------------------------------------------------------------

def test_upload_and_download_land_in_the_mount(gateway, account, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(300_000))
    write(os.path.join(account.mount, "from-host.txt"), "written on the host")

    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            assert await sftp.getcwd() == "/"
            await sftp.put(str(upload), "upload.bin")
            await sftp.get("from-host.txt", str(tmp_path / "downloaded.txt"))
            await sftp.mkdir("dir")
            await sftp.rename("upload.bin", "dir/upload.bin")
            assert sorted(await sftp.listdir("/")) == [".", "..", "dir", "from-host.txt"]
            assert (await sftp.stat("dir/upload.bin")).size == upload.stat().st_size

    asyncio.run(scenario())
    with open(os.path.join(account.mount, "dir", "upload.bin"), "rb") as landed:
        assert landed.read() == upload.read_bytes()
    assert (tmp_path / "downloaded.txt").read_text() == "written on the host"


def test_set_id_bits_are_dropped(gateway, account):
    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("tool", "w", asyncssh.SFTPAttrs(permissions=0o4755)) as handle:
                await handle.write("#!/bin/sh\n")
            await sftp.chmod("tool", 0o6755)

    asyncio.run(scenario())
    assert stat.S_IMODE(os.stat(os.path.join(account.mount, "tool")).st_mode) == 0o755


# --- logins -------------------------------------------------------------------------------------

def test_wrong_password_and_unknown_user_are_refused(gateway, account):
    async def scenario():
        with pytest.raises(asyncssh.PermissionDenied):
            async with connect(gateway, account.username, account.password + "x"):
                pass
        with pytest.raises(asyncssh.PermissionDenied):
            async with connect(gateway, new_username(), account.password):
                pass

    asyncio.run(scenario())


def test_login_is_refused_while_the_mount_path_is_not_mounted(app, gateway, make_volume):
    volume, username, password = make_volume(), new_username(), unique("pw")
    with tempfile.TemporaryDirectory(prefix="robin-gw-unmounted-") as directory, app.app_context():
        service.activate(volume, username, password, directory)
        try:
            async def scenario():
                with pytest.raises(asyncssh.PermissionDenied):
                    async with connect(gateway, username, password):
                        pass

            asyncio.run(scenario())
        finally:
            service.remove(volume)
    assert "the volume is not mounted" in gateway.log()


def test_no_shell_exec_or_forwarding(gateway, account):
    async def scenario():
        async with login(gateway, account) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.run("id")
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", gateway.port)

    asyncio.run(scenario())


# --- confinement ----------------------------------------------------------------------------------

@pytest.fixture()
def outside_file():
    """A file beside the mount, outside it: what an escape would reach."""
    with tempfile.NamedTemporaryFile("w", prefix="robin-gw-outside-", dir="/tmp") as handle:
        handle.write("secret")
        handle.flush()
        yield handle.name


def test_dot_dot_and_absolute_paths_stay_inside(gateway, account, outside_file):
    outside = os.path.basename(outside_file)

    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            for path in ("/etc/passwd", "../../../etc/passwd", f"../{outside}", f"/../{outside}", outside_file):
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await sftp.open(path)
            assert await sftp.realpath("../../..") == "/"
            assert sorted(await sftp.listdir("/..")) == [".", ".."]  # the (empty) mount, not its parent
            async with sftp.open("../robin-gw-escape", "w") as handle:  # `..` of the root is the root
                await handle.write("stays inside")

    asyncio.run(scenario())
    assert not os.path.exists(os.path.join(os.path.dirname(account.mount), "robin-gw-escape"))
    assert read(os.path.join(account.mount, "robin-gw-escape")) == "stays inside"


def test_symlinks_pointing_outside_lead_nowhere(gateway, account, outside_file):
    # Made on the host side, as a pod sharing the volume could: absolute, relative, and to a file.
    os.symlink("/etc", os.path.join(account.mount, "etc-link"))
    os.symlink("../../../../..", os.path.join(account.mount, "up"))
    os.symlink(outside_file, os.path.join(account.mount, "secret"))

    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            for path in ("etc-link/passwd", "up/etc/passwd", "secret", f"up{outside_file}"):
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await sftp.open(path)
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await sftp.stat(path)
            assert sorted(await sftp.listdir("up")) == [".", "..", "etc-link", "secret", "up"]
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open("etc-link/robin-gw-escape", "w")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.chmod("secret", 0o777)
            # The client's own links resolve inside the mount too.
            await sftp.symlink("/etc", "mine")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open("mine/passwd")

    asyncio.run(scenario())
    assert not os.path.exists("/etc/robin-gw-escape")
    assert stat.S_IMODE(os.stat(outside_file).st_mode) == 0o600
    assert read(outside_file) == "secret"


# --- ending sessions ----------------------------------------------------------------------------

def test_forbidding_login_ends_the_live_session_until_activated_again(app, gateway, account):
    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            await sftp.listdir("/")
            started = time.monotonic()
            with app.app_context():
                service.forbid_login(account.volume)
            await session_ends(conn, sftp, started)
        with pytest.raises(asyncssh.PermissionDenied):
            async with login(gateway, account):
                pass
        with app.app_context():
            service.activate(account.volume, account.username, account.password, account.mount)
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            await sftp.listdir("/")

    asyncio.run(scenario())
    assert '"reason": "login is forbidden"' in gateway.log()


def test_removing_the_account_ends_the_live_session(app, gateway, account):
    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            started = time.monotonic()
            with app.app_context():
                assert service.remove(account.volume) is True
            await session_ends(conn, sftp, started)
        with pytest.raises(asyncssh.PermissionDenied):
            async with login(gateway, account):
                pass

    asyncio.run(scenario())


def test_a_new_mount_path_ends_the_live_session(app, gateway, account):
    with tmpfs() as other_mount:
        async def scenario():
            async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
                started = time.monotonic()
                with app.app_context():
                    service.activate(account.volume, account.username, account.password, other_mount)
                await session_ends(conn, sftp, started)
            async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
                async with sftp.open("here.txt", "w") as handle:
                    await handle.write("new mount")

        asyncio.run(scenario())
        assert read(os.path.join(other_mount, "here.txt")) == "new mount"


def test_an_unmounted_volume_ends_the_live_session(gateway, account):
    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            started = time.monotonic()
            # Lazily: the session's descriptors keep the mount busy, as they would for robin's own unmount.
            subprocess.run(["umount", "-l", account.mount], check=True)
            await session_ends(conn, sftp, started)

    asyncio.run(scenario())


# --- the host key -------------------------------------------------------------------------------

def test_the_host_key_is_made_once_and_kept_across_restarts(database_url, tmp_path):
    directory = str(tmp_path / "gateway")

    def served_key() -> str:
        with running_gateway(database_url, directory) as running:
            return asyncio.run(asyncssh.get_server_host_key("127.0.0.1", running.port)).get_fingerprint()

    first = served_key()
    key_file = os.path.join(directory, HOST_KEY_NAME)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert asyncssh.read_private_key(key_file).get_fingerprint() == first
    assert served_key() == first


# --- the accounts service -----------------------------------------------------------------------

def test_passwords_are_stored_as_salted_scrypt(app, account):
    with app.app_context():
        stored = service.find(account.username).password_hash
        assert stored.startswith("scrypt$16384$8$1$")
        assert account.password not in stored
        assert service.check_login(account.username, account.password) is not None
        assert service.check_login(account.username, account.password.upper()) is None
        service.activate(account.volume, account.username, account.password, account.mount)
        assert service.find(account.username).password_hash != stored  # a fresh salt each time


@pytest.mark.parametrize("username", ["Root", "1abc", "a" * 33, "a/b", "", "ab c"])
def test_bad_usernames_are_refused(app, make_volume, username):
    with app.app_context(), pytest.raises(InvalidInput):
        service.activate(make_volume(), username, "pw", "/mnt/somewhere")


def test_a_username_belongs_to_one_volume_and_a_volume_has_one_account(app, make_volume, db_rows):
    first, second, username = make_volume(), make_volume("rbd-images"), new_username()
    with app.app_context():
        service.activate(first, username, "pw-1", "/mnt/first")
        with pytest.raises(Conflict) as refused:
            service.activate(second, username, "pw-2", "/mnt/second")
        assert refused.value.code == "username_taken"
        renamed = new_username()
        service.activate(first, renamed, "pw-3", "/mnt/first-again")
        service.activate(second, username, "pw-2", "/mnt/second")  # free again
        try:
            rows = db_rows(select(GatewayAccount).where(GatewayAccount.username.in_([username, renamed])))
            assert {(row.username, row.cephfs_path_id, row.rbd_image_id) for row in rows} == {
                (renamed, first.id, None), (username, None, second.id)}
            assert service.account_of(second).mount_path == "/mnt/second"
        finally:
            assert service.remove(first) and service.remove(second)
            assert service.remove(first) is False
