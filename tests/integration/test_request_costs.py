"""What one write request costs the database: SQL statements, committed transactions and (on PostgreSQL, through a
counting proxy) round trips, at most the figures measured when these paths were trimmed
(benchmarks/profile_requests.py prints them with their timings), so a change that adds a round trip fails here.
Each request still answers as before and leaves its one audit row."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from robin.audit.models import AuditEvent
from tests.conftest import unique
from tests.support.costs import Counted, counting
from tests.support.pg_proxy import proxied

pytestmark = pytest.mark.integration
GiB = 2**30

# Per request: statements, with its token looked up (a cold token cache; BEGIN is no statement here), and write
# transactions committed (the token's read is a read connection's, not counted). The state machine's
# two commits around the Ceph call are in every figure, the audit row's final status written in the second;
# a clone finds its parent, with its snapshot, in one statement of the transaction that reserves its quota; a
# create reads its cluster in the statement that locks the project's quota; a snapshot's delete reads the volume
# with the snapshot, as a rollback does.
CEILINGS = {
    "rbd_create": (7, 2),
    "rbd_resize": (8, 2),
    # A delete locks its project before it reads the volume, in a statement of its own: a clone's reservation may
    # not commit between its check for clones and its claim, and a lock taken in the volume's read would leave that
    # read as old as the wait.
    "rbd_delete": (9, 2),
    "rbd_purge": (9, 2),
    "snapshot_create": (8, 2),
    "snapshot_delete": (7, 2),
    "rollback": (7, 2),
    "clone_create": (8, 2),
    "cephfs_create": (8, 2),  # one more: the users of earlier volumes at its path, removed before it holds data
}


# On PostgreSQL, round trips too: the server's answers a request waited for, its token's lookup included (one).
# psycopg's BEGIN and COMMIT cost one each in the first commit; the second commit (after the Ceph call) is one in all,
# BEGIN, its two UPDATEs and COMMIT sent together in one pipeline (it was four: 3 more in every figure).
ROUND_TRIPS = {
    "rbd_create": 8,
    "rbd_resize": 9,
    "rbd_delete": 10,
    "rbd_purge": 10,
    "snapshot_create": 9,
    "snapshot_delete": 8,
    "rollback": 10,
    "clone_create": 9,
    "cephfs_create": 9,
}


def audit_rows(db_rows, project: str) -> list[AuditEvent]:
    return db_rows(select(AuditEvent).where(AuditEvent.project == project).order_by(AuditEvent.id))


@pytest.fixture()
def round_trips(backend, database_url, rebind_db):
    """On PostgreSQL, a proxy in front of the API's database that counts its round trips; None on SQLite."""
    if backend == "sqlite":
        yield None
        return
    with proxied(database_url) as (proxy, url):
        rebind_db(url)
        yield proxy


@pytest.fixture()
def project(new_project):
    return new_project(max_bytes=100 * GiB, max_volumes=50, max_snapshots=50)


def within_ceiling(op: str, counted: Counted, round_trips: int | None) -> None:
    statements, transactions = CEILINGS[op]
    assert len(counted.statements) <= statements, (op, counted.statements)
    assert counted.write_transactions <= transactions, (op, counted.write_transactions)
    if round_trips is not None:
        assert round_trips <= ROUND_TRIPS[op], (op, round_trips)


@pytest.fixture()
def call(admin, db_rows, project, round_trips):
    """call(op, method, path, status, body): one request, counted; it answers `status` and adds exactly one audit
    row, with that status."""
    def request(op: str, method: str, path: str, status: int, body=None):
        before = len(audit_rows(db_rows, project))
        trips_before = round_trips.round_trips if round_trips else None
        with counting() as counted:
            response = admin.open(path, method=method, json=body)
        trips = round_trips.round_trips - trips_before if round_trips else None
        assert response.status_code == status, response.json
        rows = audit_rows(db_rows, project)
        assert len(rows) == before + 1
        assert (rows[-1].status_code, rows[-1].outcome) == (status, "success")
        within_ceiling(op, counted, trips)
        return response

    return request


def test_write_paths_stay_within_their_statement_and_transaction_ceilings(admin, project, call):
    images = f"/api/v2/projects/{project}/rbd-images"
    name, clone = unique("img"), unique("clone")
    created = call("rbd_create", "POST", images, 201, {"name": name, "size_bytes": GiB})
    assert (created.json["state"], created.json["size_bytes"]) == ("available", GiB)
    resized = call("rbd_resize", "PATCH", f"{images}/{name}", 200,
                      {"size_bytes": 2 * GiB})
    assert (resized.json["state"], resized.json["size_bytes"]) == ("available", 2 * GiB)
    snapshot = call("snapshot_create", "POST", f"{images}/{name}/snapshots", 201,
                       {"name": "s1"})
    assert (snapshot.json["state"], snapshot.json["size_bytes"]) == ("available", 2 * GiB)
    cloned = call("clone_create", "POST", images, 201,
                     {"name": clone, "source": {"image": name, "snapshot": "s1"}})
    assert cloned.json["parent"] == {"image": name, "snapshot": "s1"}
    call("rbd_delete", "DELETE", f"{images}/{clone}", 204)
    assert admin.post(f"{images}/{name}/snapshots", json={"name": "s2"}).status_code == 201
    rolled = call("rollback", "POST", f"{images}/{name}/snapshots/s2/rollback", 200)
    assert (rolled.json["name"], rolled.json["volume"], rolled.json["state"]) == ("s2", name, "available")
    call("snapshot_delete", "DELETE", f"{images}/{name}/snapshots/s2", 204)
    assert admin.get(f"{images}/{name}/snapshots/s2").status_code == 404
    assert admin.get(f"{images}/{clone}").status_code == 404
    purged = unique("purged")
    assert admin.post(images, json={"name": purged, "size_bytes": GiB}).status_code == 201
    call("rbd_purge", "DELETE", f"{images}/{purged}?purge=true", 204)
    assert admin.get(f"{images}/{purged}").status_code == 404
    paths = f"/api/v2/projects/{project}/cephfs-paths"
    made = call("cephfs_create", "POST", paths, 201,
                   {"name": unique("dir"), "quota_bytes": GiB})
    assert (made.json["state"], made.json["quota_bytes"]) == ("available", GiB)
    usage = admin.get(f"/api/v2/projects/{project}/usage").json
    assert (usage["provisioned_bytes"], usage["volumes"]) == (2 * GiB + GiB, 2)


def test_a_cached_token_costs_no_statement(admin, project):
    images = f"/api/v2/projects/{project}/rbd-images"
    with counting() as cold:
        assert admin.get(images).status_code == 200
    with counting(cold_tokens=False) as warm:
        assert admin.get(images).status_code == 200
        assert admin.get(images).status_code == 200
    assert len(warm.statements) == 2 * (len(cold.statements) - 1)
