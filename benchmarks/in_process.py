"""robin in the benchmark's own process, as profile_requests.py, gc_per_request.py and write_cpu.py drive it: a
fresh database (and a dev Ceph cluster), the app with an admin token and a project of its own, robin's write paths
each as one request through Flask's test client (its setup made before, untimed), and a cProfile of one of them.

Nothing here imports `benchmarks.*`: write_cpu.py's runs of another checkout put that checkout first on the path,
and import this module from their own script's directory.
"""
from __future__ import annotations

import cProfile
import io
import os
import platform
import pstats
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

GiB = 2**30
# Quotas no benchmark reaches: a refused request would end the run.
QUOTA = {"max_bytes": 2**50, "max_volumes": 1_000_000, "max_snapshots": 1_000_000}


class Requests:
    """The write paths, each as a callable that makes one request (its setup done before, untimed)."""

    def __init__(self, client, token: str, project: str):
        self.client, self.project = client, project
        self.headers = {"Authorization": f"Bearer {token}"}
        self.images = f"/api/v2/projects/{project}/rbd-images"
        self.paths = f"/api/v2/projects/{project}/cephfs-paths"

    def call(self, method: str, url: str, expected: int, body: dict | None = None):
        response = self.client.open(url, method=method, json=body, headers=self.headers)
        if response.status_code != expected:
            raise SystemExit(f"{method} {url}: {response.status_code} {response.get_data(as_text=True)}")
        return response

    def image(self, name: str | None = None) -> str:
        name = name or f"img-{uuid.uuid4().hex[:10]}"
        self.call("POST", self.images, 201, {"name": name, "size_bytes": GiB})
        return name

    def snapshot(self, image: str) -> str:
        self.call("POST", f"{self.images}/{image}/snapshots", 201, {"name": "s1"})
        return "s1"

    def prepare(self, op: str) -> Callable[[], object]:
        """Set up what `op` needs; return the timed request."""
        name = f"{op.replace('_', '-')}-{uuid.uuid4().hex[:10]}"
        if op == "rbd_create":
            return lambda: self.call("POST", self.images, 201, {"name": name, "size_bytes": GiB})
        if op == "rbd_resize":
            image = self.image()
            return lambda: self.call("PATCH", f"{self.images}/{image}", 200, {"size_bytes": 2 * GiB})
        if op == "rbd_delete":
            image = self.image()
            return lambda: self.call("DELETE", f"{self.images}/{image}", 204)
        if op == "rbd_purge":
            image = self.image()
            return lambda: self.call("DELETE", f"{self.images}/{image}?purge=true", 204)
        if op == "snapshot_create":
            image = self.image()
            return lambda: self.call("POST", f"{self.images}/{image}/snapshots", 201, {"name": "s1"})
        if op == "snapshot_delete":
            image = self.image()
            snapshot = self.snapshot(image)
            return lambda: self.call("DELETE", f"{self.images}/{image}/snapshots/{snapshot}", 204)
        if op == "rollback":
            image = self.image()
            snapshot = self.snapshot(image)
            return lambda: self.call("POST", f"{self.images}/{image}/snapshots/{snapshot}/rollback", 200)
        if op == "clone_create":
            parent = self.image()
            snapshot = self.snapshot(parent)
            return lambda: self.call("POST", self.images, 201,
                                     {"name": name, "source": {"image": parent, "snapshot": snapshot}})
        if op == "cephfs_create":
            return lambda: self.call("POST", self.paths, 201, {"name": name, "quota_bytes": GiB})
        raise ValueError(op)


@contextmanager
def robin_app(database_url: str, ceph_conf: str, name: str, **settings) -> Iterator[Requests]:
    """The database migrated, robin's app on it (`settings` beside the URLs), an admin token named `name` and a
    project `<name>-<random>`: the requests to make. The app's Ceph connections are closed at the end, while the
    cluster still runs."""
    from cryptography.fernet import Fernet

    from robin import create_app
    from robin.auth.models import Role
    from robin.auth.service import create_token
    from robin.clusters.service import registry
    from robin.config import Settings
    from robin.db import upgrade

    upgrade(database_url)
    app = create_app(Settings(database_url=database_url, ceph_conf=ceph_conf, max_volume_bytes=2**50,
                              secret_key=Fernet.generate_key().decode(), **settings))
    try:
        with app.app_context():
            token = create_token(Role.ADMIN, name=name)[0]
        requests = Requests(app.test_client(), token, f"{name}-{uuid.uuid4().hex[:8]}")
        requests.call("POST", "/api/v2/projects", 201, {"name": requests.project, "quota": QUOTA})
        yield requests
    finally:
        registry.connections.close()


@contextmanager
def cluster_and_database(kind: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(ceph.conf, database URL): a dev Ceph cluster and a fresh database, a SQLite file or a database on a
    PostgreSQL server (`kind`), in a temporary directory `/tmp/<prefix>*`; both stopped by pid at the end, a
    half-started cluster too."""
    from robin.dev.cluster import DevCluster

    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as scratch, database(kind, scratch) as url:
        cluster = DevCluster(Path(scratch) / "ceph")
        try:
            yield str(cluster.up()), url
        finally:
            cluster.down()


@contextmanager
def database(kind: str, scratch: str) -> Iterator[str]:
    """A fresh database: a SQLite file, or a database on a PostgreSQL server started here (stopped at the end)."""
    if kind == "sqlite":
        yield f"sqlite:///{scratch}/robin.db"
        return
    from tests.support.postgres import PostgresServer

    server = PostgresServer.start()
    try:
        yield server.create_database("robin_profile")
    finally:
        server.stop()


def profiled(prepare: Callable[[str], Callable[[], object]], op: str, iterations: int, sort: str,
             lines: int) -> str:
    """cProfile of `iterations` requests of `op` (each prepared untimed): the calls per request and the `lines`
    hottest functions by `sort`."""
    profiler = cProfile.Profile()
    for _ in range(iterations):
        request = prepare(op)
        profiler.enable()
        request()
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"cProfile of {iterations} {op} requests: {stats.total_calls / iterations:.0f} function calls "
              "per request\n")
    stats.sort_stats(sort).print_stats(lines)
    return out.getvalue()


def machine() -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {platform.node()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, load average {load}")
