"""Several `robin serve` replicas on one database, as behind a load balancer: quotas hold across them, the
maintenance loop runs in one at a time and moves when its holder is killed, and a browser's session or a
registered cluster's key made through one works through the other.

Each replica is a real gunicorn with a state directory of its own (as on a host of its own). On SQLite the
replicas share one file, which robin supports on one host (its maintenance lock is an flock beside the file,
its quota reservations immediate transactions); PostgreSQL is what replicas on several hosts need.
"""
from __future__ import annotations

import re
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rbd
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from robin.projects.models import Project
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique
from tests.support.net import eventually
from tests.support.outages import evict_cephfs_sessions
from tests.support.server import SESSION_SECRET_KEY, running_replica

pytestmark = pytest.mark.integration
GiB, MiB = 2**30, 2**20
ATTEMPTS = 40
QUOTA = 10
REQUEST_TIMEOUT_S = 60
# The failover test's maintenance interval, and how many of them a new leader may take to show up: the lock is
# free as soon as the killed replica's database session ends, and every worker knocks once an interval.
INTERVAL_S = 1
TAKEOVER_INTERVALS = 30
# Seconds a trashed image waits before it is due: long enough that it falls due only after the leader is killed.
TRASH_DELAY_S = 10


@contextmanager
def two_replicas(database_url: str, ceph_conf: str, extra_env: dict, tmp_path: Path):
    """Two replicas on one database. The first gets the secret key from ROBIN_SECRET_KEY, the second from a
    file (as a mounted Secret): the same key, however each is configured."""
    key_file = tmp_path / "secret-key"
    key_file.write_text(f"{SESSION_SECRET_KEY}\n")
    key_file.chmod(0o600)
    from_file = {"ROBIN_SECRET_KEY": "", "ROBIN_SECRET_KEY_FILE": str(key_file)}
    with ExitStack() as stack:
        yield [stack.enter_context(running_replica(database_url, ceph_conf, workers=2, extra_env={**extra_env,
                                                                                              **more}))
               for more in ({}, from_file)]


@pytest.fixture(scope="module")
def replicas(database_url, ceph_conf, tmp_path_factory):
    """Two replicas whose maintenance is off: their loops would reconcile other tests' rows meanwhile."""
    with two_replicas(database_url, ceph_conf, {"ROBIN_MAINTENANCE_INTERVAL": "0"},
                      tmp_path_factory.mktemp("replicas")) as pair:
        yield pair


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- quotas -------------------------------------------------------------------------------------

@pytest.mark.parametrize("quota, size_bytes", [
    ({"max_volumes": QUOTA, "max_bytes": 100 * GiB}, 8 * MiB),
    ({"max_volumes": 100, "max_bytes": QUOTA * GiB}, GiB),
], ids=["volumes", "bytes"])
def test_forty_creates_across_two_replicas_fill_a_quota_of_ten_exactly(replicas, admin, admin_token, new_project,
                                                                        quota, size_bytes, rbd_ioctx, db_rows):
    project = new_project(**quota)
    names = [unique("race") for _ in range(ATTEMPTS)]

    def create(index: int) -> requests.Response:
        replica = replicas[index % len(replicas)]  # half the requests to each
        return requests.post(f"{replica.url}/api/v2/projects/{project}/rbd-images", headers=bearer(admin_token),
                             json={"name": names[index], "size_bytes": size_bytes}, timeout=REQUEST_TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=ATTEMPTS) as pool:
        responses = list(pool.map(create, range(ATTEMPTS)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * QUOTA + [403] * (ATTEMPTS - QUOTA), \
        [response.text for response in responses if response.status_code not in (201, 403)]
    assert {response.json()["error"]["code"] for response in responses if response.status_code == 403} \
        == {"quota_exceeded"}
    created = {response.json()["name"] for response in responses if response.status_code == 201}
    assert set(rbd.RBD().list(rbd_ioctx)) & set(names) == created
    rows = db_rows(select(RbdImage).join(Project).where(Project.name == project, RbdImage.deleted_at.is_(None)))
    assert {row.name for row in rows} == created and all(row.state is VolumeState.AVAILABLE for row in rows)

    for name in created:
        purged = admin.delete(f"/api/v2/projects/{project}/rbd-images/{name}", query_string={"purge": "true"})
        assert purged.status_code == 204
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


# --- what a load balancer may send anywhere -----------------------------------------------------

def csrf_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_a_dashboard_session_opened_on_one_replica_works_on_the_other(replicas, admin_token):
    first, second = replicas
    browser = requests.Session()  # one cookie jar for both, as one host name behind a load balancer
    form = browser.get(f"{first.url}/ui/login", timeout=REQUEST_TIMEOUT_S)
    logged_in = browser.post(f"{first.url}/ui/login", data={"token": admin_token, "csrf_token": csrf_token(form.text)},
                             allow_redirects=False, timeout=REQUEST_TIMEOUT_S)
    assert logged_in.status_code == 302 and logged_in.headers["Location"].endswith("/ui/")

    page = browser.get(f"{second.url}/ui/", allow_redirects=False, timeout=REQUEST_TIMEOUT_S)
    assert page.status_code == 200 and "Log out" in page.text
    # The CSRF token the first replica put in the cookie is good on the second too: it logs out there...
    logged_out = browser.post(f"{second.url}/ui/logout", data={"csrf_token": csrf_token(page.text)},
                              allow_redirects=False, timeout=REQUEST_TIMEOUT_S)
    assert logged_out.status_code == 302 and logged_out.headers["Location"].endswith("/ui/login")
    # ... which ends the session on the first as well.
    after = browser.get(f"{first.url}/ui/", allow_redirects=False, timeout=REQUEST_TIMEOUT_S)
    assert after.status_code == 302 and after.headers["Location"].endswith("/ui/login")


def conf_value(ceph_conf: str, key: str) -> str:
    for line in Path(ceph_conf).read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    raise AssertionError(f"no {key} in {ceph_conf}")


def admin_key(ceph_conf: str) -> str:
    keyring = Path(conf_value(ceph_conf, "keyring")).read_text()
    return re.search(r"\[client\.admin\][^\[]*?key\s*=\s*(\S+)", keyring).group(1)


def test_a_cluster_registered_through_one_replica_is_usable_through_the_other(replicas, admin_token, new_project,
                                                                              ceph_conf, rbd_ioctx):
    first, second = replicas
    session = requests.Session()
    session.headers.update(bearer(admin_token))
    cluster, project, image = unique("alias"), new_project(), unique("img")
    # The session's own Ceph cluster under a second name, by monitors and key: the key is stored encrypted.
    registered = session.post(f"{first.url}/api/v2/clusters", timeout=REQUEST_TIMEOUT_S, json={
        "name": cluster, "mon_host": conf_value(ceph_conf, "mon host"), "key": admin_key(ceph_conf)})
    assert registered.status_code == 201, registered.text
    try:
        detail = session.get(f"{second.url}/api/v2/clusters/{cluster}", timeout=REQUEST_TIMEOUT_S).json()
        assert detail["reachable"] is True, detail
        created = session.post(f"{second.url}/api/v2/projects/{project}/rbd-images", timeout=REQUEST_TIMEOUT_S,
                               json={"name": image, "size_bytes": 8 * MiB, "cluster": cluster})
        assert created.status_code == 201, created.text
        assert image in rbd.RBD().list(rbd_ioctx)
        purged = session.delete(f"{second.url}/api/v2/projects/{project}/rbd-images/{image}",
                                params={"purge": "true"}, timeout=REQUEST_TIMEOUT_S)
        assert purged.status_code == 204
    finally:
        # The project's rows first: a cluster that volume rows still name cannot be unregistered.
        assert session.delete(f"{first.url}/api/v2/projects/{project}", timeout=REQUEST_TIMEOUT_S).status_code == 204
        assert session.delete(f"{first.url}/api/v2/clusters/{cluster}", timeout=REQUEST_TIMEOUT_S).status_code == 204


# --- each worker's requests ----------------------------------------------------------------------

def requests_by_worker(replica, token: str) -> dict[int, float]:
    """robin_worker_requests on the replica's /metrics: requests answered so far, by worker pid."""
    scraped = requests.get(f"{replica.url}/metrics", headers=bearer(token), timeout=REQUEST_TIMEOUT_S)
    scraped.raise_for_status()
    return {int(sample.labels["pid"]): sample.value for family in text_string_to_metric_families(scraped.text)
            if family.name == "robin_worker_requests" for sample in family.samples}


def test_each_worker_reports_the_requests_it_answered(replicas, admin_token):
    """One series per live worker of the replica (its master answers none), and together they count every request
    answered, the scrape's own included (counted once answered)."""
    replica = replicas[0]
    before = requests_by_worker(replica, admin_token)
    assert set(before) == replica.pids() - {replica.process.pid}
    for _ in range(10):  # a connection each: gunicorn hands them to whichever worker accepts
        assert requests.get(f"{replica.url}/healthz", timeout=REQUEST_TIMEOUT_S).status_code == 200
    after = requests_by_worker(replica, admin_token)
    assert set(after) == set(before)
    assert sum(after.values()) - sum(before.values()) == 10 + 1


# --- the maintenance loop -----------------------------------------------------------------------

def leads(replica, token: str) -> bool:
    """What the replica's /metrics says: whether one of its workers holds the maintenance lock."""
    scraped = requests.get(f"{replica.url}/metrics", headers=bearer(token), timeout=REQUEST_TIMEOUT_S)
    scraped.raise_for_status()
    for family in text_string_to_metric_families(scraped.text):
        if family.name == "robin_maintenance_leader":
            return family.samples[0].value == 1
    raise AssertionError("no robin_maintenance_leader on /metrics")


def the_leader(replicas: list, token: str):
    """The one replica that leads, once one does; never two at once."""
    def look():
        leading = [replica for replica in replicas if leads(replica, token)]
        assert len(leading) <= 1, "two replicas lead the maintenance loop at once"
        return leading[0] if leading else None

    return eventually(look, timeout=TAKEOVER_INTERVALS * INTERVAL_S, what="a maintenance leader")


def test_maintenance_moves_to_the_other_replica_when_its_leader_is_killed(database_url, ceph_conf, admin_token,
                                                                          new_project, admin, rbd_ioctx, db_rows,
                                                                          tmp_path):
    project, image = new_project(), unique("due")
    maintenance = {"ROBIN_MAINTENANCE_INTERVAL": str(INTERVAL_S), "ROBIN_TRASH_DELAY": str(TRASH_DELAY_S)}
    with two_replicas(database_url, ceph_conf, maintenance, tmp_path) as replicas:
        leader = the_leader(replicas, admin_token)
        [follower] = [replica for replica in replicas if replica is not leader]
        assert not leads(follower, admin_token)

        created = requests.post(f"{follower.url}/api/v2/projects/{project}/rbd-images", headers=bearer(admin_token),
                                json={"name": image, "size_bytes": 8 * MiB}, timeout=REQUEST_TIMEOUT_S)
        assert created.status_code == 201, created.text
        trashed = requests.delete(f"{follower.url}/api/v2/projects/{project}/rbd-images/{image}",
                                  headers=bearer(admin_token), timeout=REQUEST_TIMEOUT_S)
        assert trashed.status_code == 204, trashed.text
        killed = leader.pids()
        leader.signal_all(signal.SIGKILL)
        killed_at = datetime.now(UTC)
        # Its maintenance rounds measured CephFS paths: the dead workers' capabilities would stall later tests'
        # CephFS calls until the MDS times their sessions out.
        evict_cephfs_sessions(ceph_conf, killed)
        [row] = db_rows(select(RbdImage).join(Project).where(Project.name == project, RbdImage.name == image))
        # Due only after the kill: the killed leader cannot have purged it, whoever purges it leads now.
        assert row.purge_after > killed_at, "this machine took longer than ROBIN_TRASH_DELAY to kill a process"

        assert the_leader([follower], admin_token) is follower
        eventually(lambda: image not in trash_names(rbd_ioctx),
                   timeout=TRASH_DELAY_S + TAKEOVER_INTERVALS * INTERVAL_S, what="the purge by the new leader")
        eventually(lambda: db_rows(select(RbdImage).where(RbdImage.id == row.id, RbdImage.trash_ref.is_(None),
                                                            RbdImage.purged_at.is_not(None))),
                   what="the purge recorded")
    assert admin.delete(f"/api/v2/projects/{project}").status_code == 204


def trash_names(ioctx) -> set[str]:
    return {entry["name"] for entry in rbd.RBD().trash_list(ioctx)}
