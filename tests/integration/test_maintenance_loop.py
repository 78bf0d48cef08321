"""The maintenance loop of `robin serve` itself, in two replicas on one database (every other test server turns it
off): within a few rounds it probes the clusters, purges what the trash has due, finishes a create a crash left
half-done, measures usage, sums the volume totals and surveys the drift. (test_replicas.py checks that one replica
at a time leads, and that the loop moves when its leader is killed.)

The loop acts on the whole database, as in production: while it runs it also converges what earlier tests left
stuck more than five minutes ago, which is what it is for."""
from __future__ import annotations

from contextlib import ExitStack
from datetime import timedelta

import pytest
import rbd
import requests
from sqlalchemy import select, update

from robin.audit.models import ClusterProbe, DriftCount, VolumeTotal, VolumeUsage
from robin.db import db, utcnow
from robin.projects.models import Project
from robin.volumes.models import RbdImage
from tests.conftest import unique
from tests.support.net import eventually
from tests.support.server import running_replica

pytestmark = pytest.mark.integration
MiB = 2**20
INTERVAL_S = 1
# Rounds a job may take to show on this shared, loaded machine: each round probes, reconciles and measures every
# volume never measured, and in a whole suite's session that is every earlier test's too.
ROUNDS = 300
REQUEST_TIMEOUT_S = 60
# Older than the loop's reconcile threshold (robin.maintenance.RECONCILE_OLDER_THAN, 5 minutes).
LONG_AGO = timedelta(minutes=10)


def _project_id(project: str) -> int:
    with db.reading() as session:
        return session.scalar(select(Project.id).where(Project.name == project))


def _stuck_create(app, project: str, name: str) -> None:
    """A row in `creating` untouched for ten minutes, with its quota reserved: a worker that died between its
    first commit and the Ceph call."""
    from robin.volumes import service
    from robin.volumes.kinds import RBD

    with app.app_context():
        service.reserve_new(RBD, project, {"name": name, "size_bytes": 16 * MiB},
                            RBD.placement({"name": name}, project))
    with db.writing() as connection:
        connection.execute(update(RbdImage).where(RbdImage.name == name)
                           .values(created_at=utcnow() - LONG_AGO, updated_at=utcnow() - LONG_AGO))


def test_the_loop_does_each_of_its_jobs_in_two_replicas(app, database_url, ceph_conf, admin, admin_token,
                                                        new_project, rbd_ioctx, db_rows):
    project, kept, due, stuck = new_project(), unique("kept"), unique("due"), unique("stuck")
    _stuck_create(app, project, stuck)
    started = utcnow()
    loop = {"ROBIN_MAINTENANCE_INTERVAL": str(INTERVAL_S), "ROBIN_TRASH_DELAY": "1",
            "ROBIN_DRIFT_INTERVAL": str(INTERVAL_S)}
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"
    with ExitStack() as stack:
        first, second = (stack.enter_context(running_replica(database_url, ceph_conf, workers=2, extra_env=loop))
                         for _ in range(2))
        images = f"/api/v2/projects/{project}/rbd-images"
        for replica, name in ((first, kept), (second, due)):
            made = session.post(replica.url + images, json={"name": name, "size_bytes": 16 * MiB},
                                timeout=REQUEST_TIMEOUT_S)
            assert made.status_code == 201, made.text
        assert session.delete(f"{second.url}{images}/{due}", timeout=REQUEST_TIMEOUT_S).status_code == 204

        def waited(check, what):
            return eventually(check, timeout=ROUNDS * INTERVAL_S, what=what, interval=0.5)

        waited(lambda: due not in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}, "the purge")
        waited(lambda: db_rows(select(RbdImage.id).where(RbdImage.name == due, RbdImage.purged_at.is_not(None))),
               "the purge recorded")
        waited(lambda: not db_rows(select(RbdImage.id).where(RbdImage.name == stuck)), "the create undone")
        # A new volume is measured in the next round (then again once its figure is older than usage.MAX_AGE).
        waited(lambda: db_rows(select(VolumeUsage.measured_at).join(RbdImage, RbdImage.id == VolumeUsage.volume_id)
                               .where(RbdImage.name == kept)), "the usage measured")
        # The totals of a round after the undo and the purge: the kept image alone.
        waited(lambda: db_rows(select(VolumeTotal.volumes).where(
            VolumeTotal.project_id == _project_id(project), VolumeTotal.summed_at >= started, VolumeTotal.kind == "rbd",
            VolumeTotal.volumes == 1, VolumeTotal.provisioned_bytes == 16 * MiB)), "the totals")
        waited(lambda: db_rows(select(ClusterProbe.up).where(ClusterProbe.probed_at >= started)), "a cluster probe")
        waited(lambda: db_rows(select(DriftCount.kind).where(DriftCount.surveyed_at >= started)), "a drift survey")

        usage = session.get(f"{first.url}/api/v2/projects/{project}/usage", timeout=REQUEST_TIMEOUT_S).json()
        assert usage["provisioned_bytes"] == 16 * MiB and usage["volumes"] == 1  # the stuck row's quota is back
        assert usage["used_bytes"] is not None and usage["measured_at"] is not None and usage["unmeasured_volumes"] == 0
    session.close()
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{kept}", query_string={"purge": "true"}
                        ).status_code == 204
