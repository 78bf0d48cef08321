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
from sqlalchemy import select, update

from robin.db import db
from robin.errors import Conflict, InvalidInput
from robin.gateway import passwords, service
from robin.gateway.models import GatewayAccount
from robin.gateway.server import HOST_KEY_NAME
from robin.volumes.models import CephfsPath, RbdImage
from tests.conftest import unique
from tests.integration import test_wayne_devices as devices
from tests.integration.test_wayne_devices import activate, new_user, wayne_password
from tests.support.gateway import running_gateway, tmpfs
from tests.support.mounts import rbd_filesystem

pytestmark = pytest.mark.integration
MiB = 2**20
# A device node or FIFO is refused without waiting for anything; a login answers within this.
REFUSAL_DEADLINE_S = 5.0
LOGIN_DEADLINE_S = 10.0
HOST_SECRET = b"the host's own disk, not the tenant's"

# Volumes activated through /v1 as Wayne does it, in a gateway_dir of each test's own (test_wayne_devices).
point_wayne_at, project, wayne = devices.point_wayne_at, devices.project, devices.wayne
gateway_dir, device = devices.gateway_dir, devices.device


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


async def session_ends(conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, gateway, account: Account,
                       reason: str) -> None:
    """The gateway's watcher ends the account's session for `reason` (test_wayne_devices.session_cut); the SFTP
    client is dead."""
    await devices.session_cut(conn, gateway, account.username, reason)
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


async def refused_login(gateway, username: str, password: str) -> float:
    """Seconds the gateway took to refuse the login."""
    started = time.monotonic()
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(gateway, username, password):
            pass
    return time.monotonic() - started


THROTTLE = {"ROBIN_GATEWAY_LOGIN_DELAY": "1", "ROBIN_GATEWAY_LOGIN_MAX_DELAY": "4",
            "ROBIN_GATEWAY_ACCOUNT_LOCKOUT": "3", "ROBIN_GATEWAY_ADDRESS_LOCKOUT": "5",
            "ROBIN_GATEWAY_LOCKOUT_SECONDS": "300"}


def test_login_throttling_slows_then_locks_out_an_account_and_an_address(app, database_url, tmp_path,
                                                                        make_volume):
    guessed, other = make_volume(), make_volume()
    guessed_user, other_user = new_username(), new_username()
    with tmpfs() as guessed_mount, tmpfs() as other_mount, app.app_context(), \
            running_gateway(database_url, str(tmp_path / "gateway"), env=THROTTLE) as throttled:
        service.activate(guessed, guessed_user, "right", guessed_mount)
        service.activate(other, other_user, "right", other_mount)
        try:
            async def scenario():
                waited = [await refused_login(throttled, guessed_user, f"guess-{n}") for n in range(3)]
                # Each failure doubles the wait before the next password is even checked: 0, 1, 2 s.
                assert waited[1] >= 1 and waited[2] >= 2
                await refused_login(throttled, guessed_user, "right")  # locked: even the right one
                async with connect(throttled, other_user, "right"):  # another account from this address
                    pass
                for name in (new_username(), new_username()):  # 5 failures from this address in all
                    await refused_login(throttled, name, "guess")
                assert await refused_login(throttled, other_user, "right") < 1  # locked: refused at once

            asyncio.run(scenario())
        finally:
            service.remove(guessed)
            service.remove(other)
        said = throttled.log()
    assert '"locked": "account"' in said and '"locked": "address"' in said
    assert '"account_failures": 3' in said and '"address_failures": 5' in said


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


# --- what a pod leaves on its volume: device nodes, FIFOs ------------------------------------------

@pytest.fixture()
def host_disk():
    """A loop device of this host holding HOST_SECRET, attached read-only: what a device node on a volume
    would hand out. Detached after."""
    with tempfile.NamedTemporaryFile(prefix="robin-gw-hostdisk-", dir="/tmp") as backing:
        backing.write(HOST_SECRET * 4096)
        backing.flush()
        loop = subprocess.run(["losetup", "--find", "--show", "--read-only", backing.name], capture_output=True,
                              text=True, check=True).stdout.strip()
        try:
            yield loop
        finally:
            subprocess.run(["losetup", "--detach", loop], check=False)


def reads_completed(device: str) -> int:
    """The kernel's count of reads the block device has served (the first field of its sysfs stat)."""
    with open(f"/sys/block/{os.path.basename(device)}/stat") as stats:
        return int(stats.read().split()[0])


def left_by_a_pod(ceph_conf: str, image: str, make) -> None:
    """Make an ext4 file system on the blank RBD image, mounted as a node mounts it for a pod, and let the pod
    (`make(mountpoint)`) write into it."""
    with rbd_filesystem(ceph_conf, "rbd", image) as mounted:
        make(mounted)


def account_mount(db_rows, user: str) -> str:
    return db_rows(select(GatewayAccount).where(GatewayAccount.username == user))[0].mount_path


def mount_options(path: str) -> set[str]:
    """The per-mount options the kernel reports for the mount at `path` (/proc/self/mountinfo, field 6)."""
    with open("/proc/self/mountinfo") as table:
        found = [line.split()[5] for line in table if line.split()[4] == path]
    assert found, f"{path} is not mounted"
    return set(found[-1].split(","))


def test_sftp_refuses_device_node_a_pod_wrote_into_its_volume(wayne, device, gateway, ceph_conf, host_disk,
                                                              db_rows):
    name, user = device("rbd"), new_user()

    def mknod(mounted: str) -> None:
        os.mknod(os.path.join(mounted, "disk"), 0o666 | stat.S_IFBLK, os.makedev(7, 0))
        os.mknod(os.path.join(mounted, "host-disk"), 0o666 | stat.S_IFBLK, os.stat(host_disk).st_rdev)
        os.symlink("host-disk", os.path.join(mounted, "link"))

    left_by_a_pod(ceph_conf, name, mknod)
    activate(wayne, "rbd", name, user)
    assert {"nodev", "nosuid", "noexec"} <= mount_options(account_mount(db_rows, user))
    reads_before = reads_completed(host_disk)

    async def scenario() -> list[bytes]:
        leaked = []
        async with connect(gateway, user, wayne_password(user)) as conn, conn.start_sftp_client() as sftp:
            assert {"disk", "host-disk", "link"} <= set(await sftp.listdir("/"))
            for path in ("disk", "host-disk", "link", "/link"):
                for mode in ("rb", "r+b"):
                    with pytest.raises(asyncssh.SFTPPermissionDenied):
                        async with sftp.open(path, mode) as handle:
                            leaked.append(await handle.read(512))
        return leaked

    assert asyncio.run(scenario()) == []
    assert reads_completed(host_disk) == reads_before  # not one read of the host's disk


def test_sftp_refuses_device_node_even_on_a_mount_without_nodev(gateway, account, host_disk):
    # The account's tmpfs is mounted without nodev: the SFTP server's own check is all that stands here.
    os.mknod(os.path.join(account.mount, "host-disk"), 0o666 | stat.S_IFBLK, os.stat(host_disk).st_rdev)
    os.mkfifo(os.path.join(account.mount, "fifo"))
    reads_before = reads_completed(host_disk)

    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            for path in ("host-disk", "fifo"):
                for mode in ("rb", "wb", "r+b", "ab"):
                    with pytest.raises(asyncssh.SFTPPermissionDenied):
                        await asyncio.wait_for(sftp.open(path, mode), REFUSAL_DEADLINE_S)
            assert stat.S_ISBLK((await sftp.lstat("host-disk")).permissions)  # seen, never opened

    asyncio.run(scenario())
    assert reads_completed(host_disk) == reads_before


def test_sftp_fifo_does_not_freeze_gateway(wayne, device, gateway, ceph_conf):
    name, user = device("rbd"), new_user()
    left_by_a_pod(ceph_conf, name, lambda mounted: os.mkfifo(os.path.join(mounted, "fifo")))
    activate(wayne, "rbd", name, user)

    async def scenario():
        async with connect(gateway, user, wayne_password(user)) as conn, conn.start_sftp_client() as sftp:
            async def open_fifo(mode: str):
                return await sftp.open("fifo", mode)

            opening = asyncio.create_task(open_fifo("rb"))
            async with asyncio.timeout(LOGIN_DEADLINE_S):  # meanwhile, a second connection gets in and works
                async with connect(gateway, user, wayne_password(user)) as other, \
                        other.start_sftp_client() as other_sftp:
                    assert "fifo" in await other_sftp.listdir("/")
            started = time.monotonic()
            for attempt in (opening, open_fifo("wb"), open_fifo("r+b")):
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await asyncio.wait_for(attempt, REFUSAL_DEADLINE_S)
            assert time.monotonic() - started < REFUSAL_DEADLINE_S
            await sftp.listdir("/")  # the session itself goes on

    # Bounded: a frozen gateway never answers the SFTP client's goodbye either.
    asyncio.run(asyncio.wait_for(scenario(), 3 * LOGIN_DEADLINE_S))


# --- ending sessions ----------------------------------------------------------------------------

def test_forbidding_login_ends_the_live_session_until_activated_again(app, gateway, account):
    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            await sftp.listdir("/")
            with app.app_context():
                service.forbid_login(account.volume)
            await session_ends(conn, sftp, gateway, account, "login is forbidden")
        with pytest.raises(asyncssh.PermissionDenied):
            async with login(gateway, account):
                pass
        with app.app_context():
            service.activate(account.volume, account.username, account.password, account.mount)
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            await sftp.listdir("/")

    asyncio.run(scenario())


def test_removing_the_account_ends_the_live_session(app, gateway, account):
    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            with app.app_context():
                assert service.remove(account.volume) is True
            await session_ends(conn, sftp, gateway, account, "the account was removed")
        with pytest.raises(asyncssh.PermissionDenied):
            async with login(gateway, account):
                pass

    asyncio.run(scenario())


def test_a_new_mount_path_ends_the_live_session(app, gateway, account):
    with tmpfs() as other_mount:
        async def scenario():
            async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
                with app.app_context():
                    service.activate(account.volume, account.username, account.password, other_mount)
                await session_ends(conn, sftp, gateway, account, "the volume was mounted elsewhere")
            async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
                async with sftp.open("here.txt", "w") as handle:
                    await handle.write("new mount")

        asyncio.run(scenario())
        assert read(os.path.join(other_mount, "here.txt")) == "new mount"


def test_an_unmounted_volume_ends_the_live_session(gateway, account):
    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            # Lazily: the session's descriptors keep the mount busy, as they would for robin's own unmount.
            subprocess.run(["umount", "-l", account.mount], check=True)
            await session_ends(conn, sftp, gateway, account, "the volume is no longer mounted")

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
        assert stored.startswith("scrypt$131072$8$1$")  # OWASP's scrypt cost: N=2^17, r=8, p=1
        assert account.password not in stored
        assert service.check_login(account.username, account.password) is not None
        assert service.check_login(account.username, account.password.upper()) is None
        service.activate(account.volume, account.username, account.password, account.mount)
        assert service.find(account.username).password_hash != stored  # a fresh salt each time


def test_a_hash_with_older_scrypt_parameters_still_logs_in_and_is_rehashed(app, gateway, account, monkeypatch):
    with app.app_context():
        monkeypatch.setattr(passwords, "N", 2**14)  # the parameters robin used before
        old = passwords.hash_password(account.password)
        monkeypatch.undo()
        with db.unit_of_work() as session:
            session.execute(update(GatewayAccount).where(GatewayAccount.username == account.username)
                            .values(password_hash=old))

    async def scenario():
        async with login(gateway, account) as conn, conn.start_sftp_client() as sftp:
            await sftp.listdir("/")

    asyncio.run(scenario())
    with app.app_context():
        rehashed = service.find(account.username).password_hash
    assert old.startswith("scrypt$16384$8$1$") and rehashed.startswith("scrypt$131072$8$1$")
    assert passwords.verify_password(account.password, rehashed)


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
