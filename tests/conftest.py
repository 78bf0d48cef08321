"""Test session wiring: a real Ceph dev cluster and, with --db=postgresql|all, a real PostgreSQL.

Both are started by this session (or taken from ROBIN_TEST_CEPH_CONF / ROBIN_TEST_POSTGRES_URL)
and stopped by pid when it ends, failures included. Tests that need a database run once per
backend selected with --db; unit tests need neither service. The Ceph cluster starts when the first
test that needs it (through the `ceph_conf` fixture) runs: robin's settings only name its ceph.conf,
so tests of the API and the database alone never start it.
"""
from __future__ import annotations

import os
import signal
import tempfile
import uuid
from pathlib import Path

import pytest

from robin.config import Settings
from robin.dev.cluster import DevCluster

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config):
    # A CI timeout or a `kill` sends SIGTERM: turn it into KeyboardInterrupt so that pytest still
    # runs the fixtures' teardown and stops the Ceph and PostgreSQL daemons this session started.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_addoption(parser):
    parser.addoption("--db", choices=(*BACKENDS, "all"), default="sqlite",
                     help="database backend(s) to run the database-backed tests on")


# Tests that legitimately run longer than setup.cfg's default timeout, by path under tests/, with the limit that
# their own deadlines add up to (a test's own timeout mark wins).
LONG_RUNNING_S = {
    "image/": 3600,  # a cold image build may take BUILD_TIMEOUT_S (30 min), then the image is run
    "migrate/": 1200,  # up to three runs of `robin migrate gluster` of RUN_TIMEOUT_S (5 min) each
    "packaging/": 1200,  # a wheel built and installed into a fresh venv, commands of up to 5 min each
    "api/test_openapi_fuzz.py": 900,  # schemathesis' run may take RUN_TIMEOUT_S (10 min)
    "api/test_generated_client.py": 900,  # openapi-python-client may take 10 min to write the client
}


# Directories whose tests need more of the machine than a venv and a database, without (or besides) Ceph: root and
# mounts (the CSI node), GlusterFS and FUSE (the migration), podman and debootstrap (the image).
NEEDS_THE_MACHINE = ("csi/", "migrate/", "image/")


def pytest_collection_modifyitems(config, items):
    for item in items:
        limit = _long_running_limit(item)
        if limit and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(limit))
        if _needs_the_machine(item) and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)


def _relative(item) -> str:
    return Path(item.path).relative_to(Path(__file__).parent).as_posix()


def _needs_the_machine(item) -> bool:
    """Whether the test starts the Ceph cluster (it asks for `ceph_conf`, itself or through its fixtures) or lives
    where tests need root, mounts or other services: what `-m "not integration"` leaves out."""
    return "ceph_conf" in item.fixturenames or _relative(item).startswith(NEEDS_THE_MACHINE)


def _long_running_limit(item) -> int | None:
    return next((limit for prefix, limit in LONG_RUNNING_S.items() if _relative(item).startswith(prefix)), None)


# Tests that drive robin from outside, over its HTTP API (the CSI driver, the Kubernetes provisioner, the GlusterFS
# migration): the requests they make run the same SQL as the API and integration tests, which run it on both
# backends. With --db=all they run once, on PostgreSQL: what robin runs on where these programs are deployed (more
# than one host, docs/replicas.md).
ONE_BACKEND = ("csi/", "k8s/", "migrate/")
ONE_BACKEND_CHOICE = "postgresql"


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--db")
        backends = BACKENDS if chosen == "all" else (chosen,)
        if chosen == "all" and _relative(metafunc.definition).startswith(ONE_BACKEND):
            backends = (ONE_BACKEND_CHOICE,)
        metafunc.parametrize("backend", backends, scope="session")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- services -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def dev_cluster() -> DevCluster:
    """The session's own Ceph cluster, not started yet; stopped (when it was) at the end of the session."""
    # Short path: the daemons' admin sockets live under it and unix socket paths are limited.
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")))
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def ceph_conf_path(request) -> str:
    """The ceph.conf of the session's Ceph cluster, which need not run yet: what robin's settings name."""
    return os.environ.get("ROBIN_TEST_CEPH_CONF") or str(request.getfixturevalue("dev_cluster").conf_path)


@pytest.fixture(scope="session")
def ceph_conf(ceph_conf_path, request) -> str:
    """The ceph.conf of a running Ceph cluster: every test that talks to Ceph asks for this (or for a fixture
    that does), which starts the session's cluster the first time."""
    if not os.environ.get("ROBIN_TEST_CEPH_CONF"):
        request.getfixturevalue("dev_cluster").up()
    return ceph_conf_path


@pytest.fixture(scope="session")
def postgres():
    from tests.support.postgres import PostgresServer

    given = os.environ.get("ROBIN_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(backend, request, tmp_path_factory) -> str:
    from robin.db import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'robin.db'}"
    else:
        server = request.getfixturevalue("postgres")
        url = server.create_database("robin_" + uuid.uuid4().hex[:12])
    upgrade(url)  # the schema comes from the migrations, as in production
    return url


@pytest.fixture(scope="session")
def settings(database_url, ceph_conf_path) -> Settings:
    from tests.support.server import SESSION_SECRET_KEY

    return Settings(database_url=database_url, ceph_conf=ceph_conf_path, ceph_timeout=5.0,
                    max_volume_bytes=2**50, log_level="WARNING", secret_key=SESSION_SECRET_KEY)


@pytest.fixture(scope="session")
def robin_url(database_url, ceph_conf):
    """robin's API served by gunicorn on the session's database, for the programs that are its clients. Its
    maintenance loop is off: it lives for the whole session and would hold the maintenance lock (and reconcile
    other tests' rows) meanwhile."""
    from tests.support.server import running_server

    with running_server(database_url, ceph_conf, workers=2, extra_env={"ROBIN_MAINTENANCE_INTERVAL": "0"}) as url:
        yield url


@pytest.fixture(scope="session")
def app(settings):
    from robin import create_app
    from robin.clusters.service import registry

    yield create_app(settings)
    # While the cluster still runs: a libcephfs handle shut down after its MDS is gone waits forever.
    registry.connections.close()


# --- API helpers --------------------------------------------------------------------------------

class Api:
    """The Flask test client with a token: api.post(path, json=...) etc."""

    def __init__(self, client, token: str | None):
        self.client = client
        self.token = token

    def _headers(self, headers):
        merged = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        merged.update(headers or {})
        return merged

    def __getattr__(self, method):
        call = getattr(self.client, method)
        return lambda path, headers=None, **kwargs: call(path, headers=self._headers(headers), **kwargs)


def make_token(app, role: str, project: str | None = None) -> str:
    from robin.auth.models import Role
    from robin.auth.service import create_token

    with app.app_context():
        return create_token(Role(role), project=project, name=f"test-{role}")[0]


@pytest.fixture(scope="session")
def admin_token(app) -> str:
    return make_token(app, "admin")


@pytest.fixture()
def admin(app, admin_token) -> Api:
    return Api(app.test_client(), admin_token)


@pytest.fixture()
def anonymous(app) -> Api:
    return Api(app.test_client(), None)


@pytest.fixture()
def as_role(app):
    """as_role("member", project) / as_role("auditor"): a client with a fresh token of that role."""
    return lambda role, project=None: Api(app.test_client(), make_token(app, role, project))


@pytest.fixture()
def new_project(admin):
    """new_project(max_bytes=..., max_volumes=...) -> a fresh project's name."""

    def create(max_bytes=10 * 2**30, max_volumes=100, max_snapshots=100) -> str:
        name = unique("p")
        response = admin.post("/api/v2/projects", json={"name": name, "quota": {
            "max_bytes": max_bytes, "max_volumes": max_volumes, "max_snapshots": max_snapshots}})
        assert response.status_code == 201, response.json
        return name

    return create


@pytest.fixture()
def robin_api(robin_url, admin_token):
    """robin_api(method, path, **kwargs) -> requests.Response: the session's gunicorn-served robin, as an admin."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"
    yield lambda method, path, **kwargs: session.request(method, robin_url + path, timeout=30, **kwargs)
    session.close()


# --- direct access, to check what the API did ---------------------------------------------------

@pytest.fixture(scope="session")
def rados_cluster(ceph_conf):
    import rados

    cluster = rados.Rados(conffile=ceph_conf)
    cluster.connect(timeout=10)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="session")
def rbd_ioctx(rados_cluster):
    ioctx = rados_cluster.open_ioctx("rbd")
    yield ioctx
    ioctx.close()


@pytest.fixture()
def rebind_db(app, database_url):
    """rebind_db(url, pool_size): the API's database reached at `url` (the session's database through a proxy)
    with a pool of that size, no idle connection pinged (a ping is a round trip that counts would include); the
    session's binding again afterwards."""
    from robin import db as robin_db

    pool_size, idle_ping_s = robin_db.db.engine.pool.size(), robin_db.POSTGRES_IDLE_PING_S

    def bind(url: str, size: int = pool_size) -> None:
        robin_db.POSTGRES_IDLE_PING_S = float("inf")
        robin_db.db.configure(url, pool_size=size)

    yield bind
    robin_db.POSTGRES_IDLE_PING_S = idle_ping_s
    robin_db.db.configure(database_url, pool_size=pool_size)


@pytest.fixture()
def db_rows(app):
    """db_rows(select(...)) -> the scalars, read in a fresh transaction (so never a stale snapshot,
    and never holding a lock the API under test would wait for)."""
    from robin.db import db

    def query(statement) -> list:
        with db.reading() as session:
            return list(session.scalars(statement).unique())

    return query


@pytest.fixture(scope="session")
def fs(ceph_conf):
    """A libcephfs client of the test cluster's file system, to check what the API did."""
    import cephfs

    client = cephfs.LibCephFS(conffile=ceph_conf)
    client.mount(filesystem_name=b"cephfs")
    yield client
    client.shutdown()


def cephfs_exists(fs, path: str) -> bool:
    import cephfs

    try:
        fs.stat(path)
        return True
    except cephfs.ObjectNotFound:
        return False
