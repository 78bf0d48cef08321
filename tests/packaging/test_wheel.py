"""The wheel stands alone: built from what a clone holds, installed into a fresh venv, run from another directory.

The wheel is built once per module, in pip's build isolation as `pip wheel .` builds it for anyone. The fresh venv
is made as the README says (Debian's python3, --system-site-packages, for the Ceph bindings) and gets the wheel
with --no-deps; robin's dependencies are this session's, reached through a plain path entry (a .pth line), so that
installing them again from the index does not cost half a minute. That path entry cannot bring the checkout's robin
back: an editable install's finder is set up only by its own .pth file in a site directory, which a path entry
never processes; every test that runs robin checks that robin's files are the venv's own.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import requests

from robin.db import pending_migrations
from tests.support.net import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: the Ceph bindings exist only for it
SERVE_START_TIMEOUT_S = 60


def run(*argv, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(arg) for arg in argv], cwd=cwd, env=env or _clean_environment(), text=True,
                            capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _clean_environment() -> dict:
    """This process's environment without what could lead a child to the checkout or this session's venv."""
    return {name: value for name, value in os.environ.items()
            if name not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not name.startswith("ROBIN_")}


def _copy_clone(destination: Path) -> None:
    """The files a clone of the checkout holds (tracked and new ones, nothing git ignores: no generated stubs,
    no egg-info, no venv), as they are in the working tree."""
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is gone from the next commit too
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    clone = tmp_path_factory.mktemp("clone")
    _copy_clone(clone)
    return clone


@pytest.fixture(scope="module")
def wheel(clone, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, clone, cwd=dist)
    (built,) = dist.glob("robin-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    run(SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv, cwd=venv)
    run(venv / "bin/python", "-m", "pip", "install", "--quiet", "--no-deps", wheel, cwd=venv)
    site_packages = run(venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=venv).stdout.strip()
    # After the venv's own site-packages on sys.path: the venv's robin comes first.
    Path(site_packages, "zz_session_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.fixture()
def elsewhere(tmp_path) -> Path:
    """A working directory that is neither the checkout nor the venv."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    return directory


def test_the_wheel_carries_its_files_and_runs_on_them(venv, elsewhere):
    located = run(venv / "bin/python", "-c", "import robin, robin.db, csi_shim, csi_shim.csi_pb2;"
                  "print(robin.__file__); print(csi_shim.__file__); print(robin.db.MIGRATIONS_DIR)",
                  cwd=elsewhere).stdout.split()
    assert all(Path(path).is_relative_to(venv) for path in located), located
    package = Path(located[0]).parent
    assert sorted(path.name for path in (package / "_migrations/versions").glob("0*.py")) \
        == sorted(path.name for path in (ROOT / "migrations/versions").glob("0*.py"))
    assert (package / "_migrations/script.py.mako").is_file()
    assert {path.name for path in (package / "ui/templates/ui").iterdir()} \
        == {path.name for path in (ROOT / "robin/ui/templates/ui").iterdir()}
    assert {path.name for path in (package / "ui/static").iterdir()} \
        == {path.name for path in (ROOT / "robin/ui/static").iterdir()}
    for data in ("api_docs/templates/api_docs", "api_docs/static"):  # the API documentation page
        assert {path.name for path in (package / data).iterdir()} \
            == {path.name for path in (ROOT / "robin" / data).iterdir()}
    assert (Path(located[1]).parent / "csi.proto").is_file()
    # Declared dependencies are all present, in versions that satisfy the metadata.
    run(venv / "bin/python", "-m", "pip", "check", cwd=elsewhere)


def test_a_checkout_on_pythonpath_reads_its_own_migrations(clone, elsewhere):
    # As the benchmarks run a clone's robin with this venv, whose editable install is another checkout.
    env = {**_clean_environment(), "PYTHONPATH": str(clone)}
    found = run(sys.executable, "-c", "import robin.db; print(robin.db.MIGRATIONS_DIR)", cwd=elsewhere, env=env)
    assert found.stdout == f"{clone / 'migrations'}\n"


def test_every_module_imports(venv, elsewhere):
    # The WSGI module builds the app from the environment, and Alembic's env.py runs only under Alembic.
    script = """
import importlib, pkgutil, robin, csi_shim
for package in (robin, csi_shim):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name not in ("robin.wsgi", "robin._migrations.env"):
            importlib.import_module(module.name)
"""
    run(venv / "bin/python", "-c", script, cwd=elsewhere)


def test_version_is_the_one_in_pyproject(venv, elsewhere):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run(venv / "bin/robin", "--version", cwd=elsewhere).stdout == f"robin, version {version}\n"
    assert importlib.metadata.version("robin") == version  # this session's editable install agrees


@pytest.mark.parametrize("command", [("bin/robin", "serve"), ("bin/robin", "provisioner"),
                                     ("bin/robin", "gateway"), ("bin/python", "-m", "csi_shim")],
                         ids=lambda command: " ".join(command))
def test_help(venv, elsewhere, command):
    assert "usage" in run(venv / command[0], *command[1:], "--help", cwd=elsewhere).stdout.lower()


def test_db_upgrade_from_anywhere(venv, elsewhere):
    url = f"sqlite:///{elsewhere / 'state/robin.db'}"
    run(venv / "bin/robin", "db", "upgrade", cwd=elsewhere, env={**_clean_environment(), "ROBIN_DATABASE_URL": url})
    assert pending_migrations(url) == []  # at the checkout's head
    with sqlite3.connect(elsewhere / "state/robin.db") as connection:
        assert connection.execute("SELECT count(*) FROM projects").fetchone() == (0,)


@pytest.mark.integration
def test_serve_answers_from_the_venv(venv, elsewhere, ceph_conf):
    port = free_port()
    env = {**_clean_environment(), "ROBIN_DATABASE_URL": f"sqlite:///{elsewhere / 'robin.db'}",
           "ROBIN_CEPH_CONF": ceph_conf, "ROBIN_STATE_DIR": str(elsewhere / "state"), "ROBIN_HOST": "127.0.0.1",
           "ROBIN_PORT": str(port), "ROBIN_WORKERS": "1", "ROBIN_MAINTENANCE_INTERVAL": "0",
           "ROBIN_LOG_LEVEL": "WARNING"}
    run(venv / "bin/robin", "db", "upgrade", cwd=elsewhere, env=env)
    with open(elsewhere / "serve.log", "wb") as log:
        server = subprocess.Popen([venv / "bin/robin", "serve"], cwd=elsewhere, env=env, stdout=log, stderr=log,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/healthz") or server.poll() is not None, SERVE_START_TIMEOUT_S,
                   "robin serve from the venv")
        assert server.poll() is None, (elsewhere / "serve.log").read_text()[-2000:]
        ready = requests.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text  # the database and Ceph, through Debian's bindings
        login = requests.get(f"{url}/ui/login", timeout=10)  # a template the wheel carries
        assert login.status_code == 200 and "<form" in login.text
        assert requests.get(f"{url}/ui/static/ui.css", timeout=10).status_code == 200  # a static file it carries
        assert "swagger-ui-bundle.js" in requests.get(f"{url}/api/v2/docs", timeout=10).text
        for docs_file in ("static/api-docs.js", "swagger-ui/swagger-ui-bundle.js"):  # robin's, and the package's
            assert requests.get(f"{url}/api/v2/docs/{docs_file}", timeout=10).status_code == 200
    finally:
        _stop(server)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)  # its own session: the master and its workers
        server.wait()
