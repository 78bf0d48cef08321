"""The container image, built from the Containerfile by `make image` and run with the engine `make` runs here.

Building costs minutes, so the image is tagged with a digest of what goes into it and built only when no image has
that tag: the Containerfile, .dockerignore and the files it lets into the build context, as a clone holds them.
The base image is made once per machine (`make base-image`, a dependency of `make image`). Every container a test
starts is stopped and removed by its id, failures included.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shlex
import sqlite3
import subprocess
import tomllib
import uuid
from pathlib import Path

import pytest
import rbd
import requests

from tests.support.csi import cephx_key
from tests.support.net import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
# What the image is built from: the Containerfile, the context's filter and the paths that filter lets in.
IMAGE_INPUTS = ("Containerfile", ".dockerignore", "pyproject.toml", "setup.py", "setup.cfg", "README.md", "LICENSE",
                "robin", "csi_shim", "migrations")
TEST_REPOSITORY = "localhost/robin-test"
IMAGE_USER = 10001  # the Containerfile's robin user and group
BUILD_TIMEOUT_S = 1800  # a cold build: debootstrap, Debian's packages, robin's dependencies from PyPI
RUN_TIMEOUT_S = 120
SERVE_START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
MiB = 2**20


def make(*arguments: str, timeout: float = RUN_TIMEOUT_S) -> str:
    done = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "-s", *arguments], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"make {' '.join(arguments)}: exit {done.returncode}\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done.stdout


def inputs_digest() -> str:
    """A digest of the image's inputs as a clone holds them (tracked and new files, none git ignores)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                             "--", *IMAGE_INPUTS], capture_output=True, check=True).stdout.decode().split("\0")
    digest = hashlib.sha256()
    for name in sorted(filter(None, listed)):
        path = ROOT / name
        if path.is_file():  # a tracked file deleted in the working tree is not in the context either
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class Engine:
    """The container engine as `make container-engine` says this machine runs it (environment, flags)."""

    def __init__(self, command_line: str):
        self.argv = ["env", *shlex.split(command_line)]

    def run(self, *arguments: str, timeout: float = RUN_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.argv, *arguments], capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{arguments}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def run_in(self, image: str, *command: str, user: str | None = None) -> str:
        """A command's output in a fresh container of `image`, removed afterwards; without network: none needs one."""
        options = ["--user", user] if user else []
        return self.run("run", "--rm", "--network", "none", *options, image, *command).stdout

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    def config(self, image: str) -> dict:
        return json.loads(self.run("image", "inspect", "--format", "{{json .Config}}", image).stdout)

    def tags(self, repository: str) -> list[str]:
        listed = self.run("images", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
        return [tag for tag in listed if tag.startswith(f"{repository}:")]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(make("container-engine"))


@pytest.fixture(scope="module")
def image(engine) -> str:
    tag = f"{TEST_REPOSITORY}:{inputs_digest()}"
    if not engine.has_image(tag):
        make("image", f"IMAGE={tag}", timeout=BUILD_TIMEOUT_S)
        remove_older_test_images(engine, keep=tag)
    return tag


def remove_older_test_images(engine: Engine, keep: str) -> None:
    """Every source change builds a new tag: the older ones would pile up, hundreds of MB each, run after run.
    Without --force, an image a container still uses (another checkout's test run) stays."""
    for older in set(engine.tags(TEST_REPOSITORY)) - {keep}:
        engine.run("rmi", older, check=False)


def package_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_robin_version_is_the_package_version(engine, image):
    assert engine.run_in(image, "robin", "--version") == f"robin, version {package_version()}\n"


def test_labels_name_the_package(engine, image):
    labels = engine.config(image)["Labels"]
    assert labels["org.opencontainers.image.title"] == "robin"
    assert labels["org.opencontainers.image.version"] == package_version()
    assert labels["org.opencontainers.image.licenses"] \
        == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]


def test_csi_shim_runs_as_a_module(engine, image):
    assert "usage: python -m csi_shim" in engine.run_in(image, "python3", "-m", "csi_shim", "--help")


def test_the_default_user_is_not_root(engine, image):
    assert engine.config(image)["User"] == f"{IMAGE_USER}:{IMAGE_USER}"
    assert engine.run_in(image, "id", "-u") == f"{IMAGE_USER}\n"


def test_the_image_holds_the_installed_wheel_and_the_node_tools(engine, image):
    script = """
set -e
# robin from the venv's site-packages, Debian's Ceph bindings beside it
python3 -c 'import rados, rbd, cephfs, robin; print(robin.__file__)'
# what robin.mounts runs on a node (the CSI node plugin, the gateway)
for tool in ceph-fuse rbd-fuse rbd rbd-nbd fusermount mount umount losetup blkid mkfs.ext4 resize2fs mkfs.xfs \
            xfs_growfs; do
    command -v "$tool" >/dev/null || { echo "missing: $tool"; exit 1; }
done
# no source tree, wheel or build tools left behind
for gone in /src /wheels /opt/wheel-builder /root/.cache/pip; do
    test ! -e "$gone" || { echo "left: $gone"; exit 1; }
done
if python3 -m pip --version >/dev/null 2>&1 || command -v cc >/dev/null; then echo "left: pip or a compiler"; exit 1; fi
"""
    located = engine.run_in(image, "sh", "-c", script, user="0")  # root: /root is root's only
    assert re.fullmatch(r"/opt/robin/lib/python3\.\d+/site-packages/robin/__init__\.py\n", located), located


# --- robin serve in the container, against the session's dev cluster ---------------------------------------------

def client_ceph_conf(ceph_conf: str) -> str:
    """What a client of the cluster needs, with the keyring where the container finds it."""
    conf = configparser.ConfigParser(strict=False)
    conf.read(ceph_conf)
    mon_host = conf.get("global", "mon host", fallback=None) or conf.get("global", "mon_host")
    return f"[global]\nfsid = {conf.get('global', 'fsid')}\nmon host = {mon_host}\nkeyring = /etc/ceph/keyring\n"


def owned_by_image_user(path: Path, mode: int) -> Path:
    path.chmod(mode)
    os.chown(path, IMAGE_USER, IMAGE_USER)
    return path


@pytest.fixture()
def ceph_dir(tmp_path, ceph_conf) -> Path:
    """A ceph.conf and client.admin's keyring, readable by the image's user only, as a mounted Secret would be."""
    directory = tmp_path / "ceph"
    directory.mkdir()
    (directory / "ceph.conf").write_text(client_ceph_conf(ceph_conf))
    (directory / "keyring").write_text(f"[client.admin]\n\tkey = {cephx_key(ceph_conf)}\n")
    for path in directory.iterdir():
        owned_by_image_user(path, 0o600)
    return owned_by_image_user(directory, 0o700)


@pytest.fixture()
def state_dir(tmp_path) -> Path:
    """robin's state directory (SQLite, its secret key) as a volume the image's user owns."""
    directory = tmp_path / "state"
    directory.mkdir()
    return owned_by_image_user(directory, 0o700)


@pytest.fixture()
def served(engine, image, ceph_dir, state_dir):
    """`robin db upgrade`, then `robin serve` on 127.0.0.1 (host network) in containers of the image: yields the
    serving container's id and its URL; stops and removes it by id afterwards."""
    port = free_port()
    options = ["--network", "host", "--volume", f"{ceph_dir}:/etc/ceph:ro", "--volume", f"{state_dir}:/var/lib/robin"]
    for name, value in {"ROBIN_CEPH_CONF": "/etc/ceph/ceph.conf", "ROBIN_HOST": "127.0.0.1", "ROBIN_PORT": port,
                        "ROBIN_WORKERS": 1, "ROBIN_MAINTENANCE_INTERVAL": 0, "ROBIN_LOG_LEVEL": "WARNING"}.items():
        options += ["--env", f"{name}={value}"]
    engine.run("run", "--rm", *options, image, "robin", "db", "upgrade")
    container = engine.run("run", "--detach", *options, image, "robin", "serve").stdout.strip()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/healthz") or not _running(engine, container), SERVE_START_TIMEOUT_S,
                   "robin serve in its container")
        assert _running(engine, container), _logs(engine, container)
        yield container, url
    finally:
        engine.run("stop", "--time", str(STOP_TIMEOUT_S), container, check=False, timeout=STOP_TIMEOUT_S + 30)
        engine.run("rm", "--force", container, check=False)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _logs(engine: Engine, container: str) -> str:
    logs = engine.run("logs", container, check=False)
    return (logs.stdout + logs.stderr)[-3000:]


def _running(engine: Engine, container: str) -> bool:
    return engine.run("inspect", "--format", "{{.State.Running}}", container, check=False).stdout.strip() == "true"


@pytest.mark.integration
def test_serve_in_the_container_makes_an_rbd_image(engine, served, state_dir, rbd_ioctx):
    container, url = served
    token = engine.run("exec", container, "robin", "token", "create", "--direct", "--admin", "--name",
                       "image-test").stdout.strip()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    ready = api.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text  # the database and Ceph, through the image's bindings

    project, name, size = f"img-{uuid.uuid4().hex[:8]}", f"img-{uuid.uuid4().hex[:8]}", 64 * MiB
    created = api.post(f"{url}/api/v2/projects", timeout=30, json={"name": project, "quota": {
        "max_bytes": 10 * size, "max_volumes": 10, "max_snapshots": 10}})
    assert created.status_code == 201, created.text
    created = api.post(f"{url}/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": size},
                       timeout=30)
    assert created.status_code == 201, created.text

    with rbd.Image(rbd_ioctx, name, read_only=True) as made:
        assert made.size() == size
    with sqlite3.connect(f"file:{state_dir / 'robin.db'}?mode=ro", uri=True) as database:
        rows = database.execute("SELECT projects.name, rbd_images.pool, rbd_images.size_bytes, rbd_images.state "
                                "FROM rbd_images JOIN projects ON projects.id = rbd_images.project_id "
                                "WHERE rbd_images.name = ?", (name,)).fetchall()
    assert rows == [(project, "rbd", size, "available")]
