"""A monitor command that librados timed out (rados_mon_op_timeout) and whose answer comes later is harmless: the
monitor client drops the late answer ("handle_mon_command_ack <tid> not found") and the process goes on. robin's
main handle keeps the op timeouts for `fs authorize` and `auth rm` for that reason; only mgr commands need a handle
without them (robin.ceph.connection.CephHandle.manager: librados aborts on a late mgr answer).

The monitor is paused with SIGSTOP while a child process, connected as robin connects, asks it to make a user; the
child resumes it and removes that user: a write the monitor commits after the first one, so its answer comes after
the late one on the same session (a read could be answered before it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from robin.dev.cluster import DevCluster
from tests.conftest import unique
from tests.integration.test_cephx_users import auth_get

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from robin.ceph.connection import CephConnection

    conf, mon_pid, entity = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conn = CephConnection("late", {"conf_path": conf}, timeout=2)
    conn.mon_command("health")  # connected, the monitors' lane answered once
    late = json.dumps({"prefix": "auth get-or-create", "entity": entity, "format": "json"})
    os.kill(mon_pid, signal.SIGSTOP)
    try:
        # patient: librados' own op timeout ends the call, on the handle robin's calls share
        ret, _, _ = conn.call("late", "a late command", lambda handle: handle.rados.mon_command(late, b""),
                              patient=True)
    finally:
        os.kill(mon_pid, signal.SIGCONT)
    print("late", ret, flush=True)
    conn.mon_command("auth rm", entity=entity)
    conn.close()
    print("done", flush=True)
""")


def test_a_late_monitor_answer_does_not_abort_the_process(ceph_conf, rados_cluster):
    if os.environ.get("ROBIN_TEST_CEPH_CONF"):
        pytest.skip("pauses the session's own dev cluster's monitor")
    mon_pid = DevCluster(Path(ceph_conf).parent).status()["daemons"]["mon.a"]["pid"]
    workdir = tempfile.mkdtemp(prefix="late", dir="/tmp")
    log_file = os.path.join(workdir, "client.log")
    child_conf = os.path.join(workdir, "ceph.conf")
    with open(ceph_conf) as conf, open(child_conf, "w") as copy:
        copy.write(conf.read() + f"\n[client]\nlog file = {log_file}\ndebug monc = 10\n")
    entity = f"client.{unique('late')}"
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, child_conf, str(mon_pid), entity],
                              capture_output=True, text=True, timeout=120)
    finally:
        os.kill(mon_pid, signal.SIGCONT)  # whatever became of the child
    try:
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
        assert done.stdout.split() == ["late", "-110", "done"]  # ETIMEDOUT from librados
        assert auth_get(rados_cluster, entity) is None
        with open(log_file) as log:  # the late answer came, and was dropped
            assert any("handle_mon_command_ack" in line and "not found" in line for line in log)
    finally:
        rados_cluster.mon_command(json.dumps({"prefix": "auth rm", "entity": entity}), b"", timeout=30)
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
