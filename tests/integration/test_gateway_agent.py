"""`robin gateway` as the node agent: the API only records, the agent mounts, unmounts and reports, one agent at a
time, and a killed agent's successor carries on from the kernel's mount table and the rows. Each test starts its
own agents (real `robin gateway` processes on 127.0.0.1, stopped or killed by pid) in a directory of its own;
Wayne calls the session's app in-process, which is the API process here."""
from __future__ import annotations

import asyncio
import dataclasses
import os

import asyncssh
import pytest
from sqlalchemy import select

from robin.compat.wayne_v1.api import KINDS
from robin.db import db
from robin.gateway.models import GatewayAccount, MountState
from tests.integration import test_wayne_devices as devices
from tests.integration.test_wayne_devices import activate, deactivate, download, status, upload
from tests.integration.test_wayne_v1 import new_image, new_user
from tests.support.gateway import running_gateway
from tests.support.net import wait_until

pytestmark = pytest.mark.integration
AGENT_DEADLINE_S = 60  # an agent's start (the app, Ceph) and a mount, on a loaded machine
# What /v1 waits for an agent in the tests that have none answering: short, the answer is the point.
SHORT_WAIT_S = 2.0

point_wayne_at, project, wayne = devices.point_wayne_at, devices.project, devices.wayne


@pytest.fixture()
def agent_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("agent"))


@pytest.fixture()
def short_wait(app, monkeypatch):
    changed = dataclasses.replace(app.config["ROBIN_SETTINGS"], gateway_activation_wait=SHORT_WAIT_S)
    monkeypatch.setitem(app.config, "ROBIN_SETTINGS", changed)


@pytest.fixture()
def volume(wayne, database_url, agent_dir, db_rows):
    """volume(kind) -> a new volume's name; whatever the test left of its activations is deactivated after, by an
    agent of the test's directory."""
    made = []

    def create(kind: str) -> str:
        name = new_image(wayne, kind)["name"]
        made.append((kind, name))
        return name

    yield create
    left = [(kind, name) for kind, name in made if status(wayne, kind, name)["msg"] != f"{name} is not activated"]
    if left:
        with running_gateway(database_url, agent_dir):
            for kind, name in left:
                assert wayne.delete(f"/v1/device/{name}?type={kind}").status == 200


def account_rows(db_rows, user: str) -> list[GatewayAccount]:
    return db_rows(select(GatewayAccount).where(GatewayAccount.username == user))


def mount_count(path: str) -> int:
    with open("/proc/self/mountinfo") as table:
        return sum(1 for line in table if line.split()[4] == path)


def traces_of(name: str, volume_id: str) -> list[str]:
    """The mounts and processes of this host that name the volume (its Ceph name, or its id, which its mount
    point and its FUSE daemon's ceph.conf path carry): what mounting or mapping it anywhere leaves. Other
    sessions on this host mount and unmount meanwhile, so nothing else is compared."""
    with open("/proc/self/mountinfo") as table:
        found = [line for line in table if name in line or volume_id in line]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if (name in argv or volume_id in argv) and int(pid) != os.getpid():
            found.append(f"pid {pid}: {argv}")
    return found


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_an_activation_survives_an_agent_kill_and_restart(kind, wayne, volume, database_url, agent_dir, db_rows):
    name, user = volume(kind), new_user()
    with running_gateway(database_url, agent_dir) as first:
        activate(wayne, kind, name, user)
        [row] = account_rows(db_rows, user)
        asyncio.run(upload(first, user, "kept.txt", b"written before the kill"))
        first.kill()
        assert mount_count(row.mount_path) == 1  # the FUSE daemons outlive the agent
        with running_gateway(database_url, agent_dir) as second:
            wait_until(lambda: "gateway agent lock taken" in second.log(), AGENT_DEADLINE_S, "the new agent's lock")
            assert "Mount" in status(wayne, kind, name)["status"]
            assert asyncio.run(download(second, user, "kept.txt")) == b"written before the kill"
            activate(wayne, kind, name, user)  # again: answered from the agent's report, nothing mounted anew
            assert mount_count(row.mount_path) == 1
            assert "gateway mounted" not in second.log() and "mount lost" not in second.log()
            deactivate(wayne, kind, name)
            assert mount_count(row.mount_path) == 0 and account_rows(db_rows, user) == []


def test_a_deactivation_recorded_while_no_agent_runs_is_carried_out_when_one_starts(wayne, volume, database_url,
                                                                                     agent_dir, db_rows, short_wait):
    name, user = volume("cephfs"), new_user()
    with running_gateway(database_url, agent_dir) as first:
        activate(wayne, "cephfs", name, user)
        [row] = account_rows(db_rows, user)
        first.kill()
        reply = wayne.delete(f"/v1/device/{name}?type=cephfs")
        assert reply.status == 503 and reply.text.startswith("gateway_unavailable: "), reply.text
        assert "the deactivation is recorded" in reply.text
        assert status(wayne, "cephfs", name) == {
            "status": [], "msg": f"{name} is deactivated; the gateway agent has not unmounted it yet"}
        assert [account.mount_state for account in account_rows(db_rows, user)] == [MountState.UNMOUNTING]
        assert mount_count(row.mount_path) == 1
        with running_gateway(database_url, agent_dir) as second:
            wait_until(lambda: not account_rows(db_rows, user), AGENT_DEADLINE_S, "the recorded deactivation")
            assert mount_count(row.mount_path) == 0
            with pytest.raises(asyncssh.PermissionDenied):
                asyncio.run(download(second, user, "anything"))
    assert status(wayne, "cephfs", name) == {"status": [], "msg": f"{name} is not activated"}


@pytest.mark.parametrize("kind", ["rbd", "cephfs"])
def test_without_an_agent_activation_fails_clearly_leaves_nothing_and_the_api_never_mounts(
        kind, wayne, volume, db_rows, short_wait):
    name, user = volume(kind), new_user()
    model = KINDS[kind].model
    [volume_id] = [row.id for row in db_rows(select(model).where(model.name == name))]
    reply = wayne.put(f"/v1/device/{name}?type={kind}", {"user": user, "password": devices.wayne_password(user)})
    assert reply.status == 503 and reply.text.startswith("gateway_unavailable: "), reply.text
    assert "nothing was activated" in reply.text
    assert account_rows(db_rows, user) == []
    assert status(wayne, kind, name) == {"status": [], "msg": f"{name} is not activated"}
    assert wayne.get(f"/v1/device/{name}/verify?type={kind}").status == 404
    assert traces_of(name, volume_id) == []  # the API process mounted nothing, and mapped nothing


def test_two_agents_one_acts_and_the_other_takes_over_when_it_dies(wayne, volume, database_url, agent_dir,
                                                                   db_rows):
    name, user = volume("rbd"), new_user()
    with running_gateway(database_url, agent_dir) as first:
        wait_until(lambda: "gateway agent lock taken" in first.log(), AGENT_DEADLINE_S, "the first agent's lock")
        with running_gateway(database_url, agent_dir) as second:
            wait_until(lambda: "gateway agent waiting for its lock" in second.log(), AGENT_DEADLINE_S,
                       "the second agent to say it waits")
            activate(wayne, "rbd", name, user)
            [row] = account_rows(db_rows, user)
            assert mount_count(row.mount_path) == 1
            assert "gateway mounted" in first.log() and "gateway mounted" not in second.log()
            first.kill()
            wait_until(lambda: "gateway agent lock taken" in second.log(), AGENT_DEADLINE_S,
                       "the second agent to take over")
            asyncio.run(upload(second, user, "after.txt", b"served by the second agent"))
            deactivate(wayne, "rbd", name)
            assert "gateway unmounted" in second.log() and mount_count(row.mount_path) == 0
    assert not devices.mounts_under(agent_dir)


def test_a_volume_mounted_for_an_activation_withdrawn_meanwhile_is_unmounted(app, wayne, volume, database_url,
                                                                              agent_dir, db_rows):
    """A mount in the agent's directory that no account claims (here: its row removed behind the agent's back,
    as a first activation that timed out leaves it) is unmounted by the next round."""
    name, user = volume("cephfs"), new_user()
    with running_gateway(database_url, agent_dir) as agent:
        activate(wayne, "cephfs", name, user)
        [row] = account_rows(db_rows, user)
        agent.kill()
        with app.app_context(), db.unit_of_work() as session:
            session.delete(session.get(GatewayAccount, row.id))
        with running_gateway(database_url, agent_dir) as successor:
            # Its mount point goes last, once unmounted.
            wait_until(lambda: not os.path.exists(row.mount_path), AGENT_DEADLINE_S, "the orphan's unmount")
            assert mount_count(row.mount_path) == 0
            assert "gateway unmounting a volume no account claims" in successor.log()

