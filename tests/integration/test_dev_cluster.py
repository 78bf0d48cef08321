"""The dev cluster: started from nothing, reused while healthy, reachable with only its conf, and
stopped by pid with its directory removed."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
import rados

from robin.dev.cluster import DevCluster

pytestmark = pytest.mark.integration
DAEMONS = {"mon.a", "mgr.x", "osd.0", "mds.a"}


@pytest.fixture()
def cluster():
    # Its own cluster, next to any other running; a short path because the daemons' unix
    # sockets live under it.
    cluster = DevCluster(Path(tempfile.mkdtemp(prefix="rdc", dir="/tmp")))
    try:
        yield cluster
    finally:
        cluster.down()


def daemon_pids(cluster: DevCluster) -> dict[str, int]:
    return {name: daemon["pid"] for name, daemon in cluster.status()["daemons"].items()}


def runs_on(pid: int, conf: Path) -> bool:
    """Whether pid is a live process started with this conf (a zombie's cmdline is empty)."""
    try:
        return str(conf).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_up_reuse_connect_and_down(cluster):
    conf = cluster.up()
    assert conf == cluster.conf_path

    status = cluster.status()
    assert status["running"] and status["healthy"] and status["health"] == "HEALTH_OK"
    assert set(status["daemons"]) == DAEMONS
    assert all(daemon["alive"] for daemon in status["daemons"].values())
    pids = daemon_pids(cluster)
    assert all(runs_on(pid, conf) for pid in pids.values())

    # A healthy cluster is reused as it is, not restarted.
    assert cluster.up() == conf
    assert daemon_pids(cluster) == pids
    assert cluster.is_healthy()

    ceph_s = subprocess.run(["ceph", "-c", str(conf), "-s"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert ceph_s.returncode == 0, ceph_s.stderr
    assert "HEALTH_OK" in ceph_s.stdout

    client = rados.Rados(conffile=str(conf))
    client.connect(timeout=10)
    try:
        assert {"rbd", "cephfs_metadata", "cephfs_data"} <= set(client.list_pools())
    finally:
        client.shutdown()

    cluster.down()
    assert not any(runs_on(pid, conf) for pid in pids.values())
    assert not cluster.directory.exists()
    assert cluster.status()["running"] is False


def test_down_stops_a_daemon_its_pid_file_no_longer_names(cluster):
    """A daemon that respawned into a new pid (an MDS does when it loses its rank) is not in its pid file; down()
    finds it by its command line on this cluster's conf, and stops it with the rest."""
    conf = cluster.up()
    pids = daemon_pids(cluster)
    (cluster.directory / "run" / "mds.a.pid").unlink()

    cluster.down()
    assert not any(runs_on(pid, conf) for pid in pids.values())
