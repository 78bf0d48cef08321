"""robin.client.provisioning, the steps the provisioner and the CSI controller share, against a fake of robin's API:
a volume of a taken name is the caller's only when robin's record names that caller."""
from __future__ import annotations

import pytest

from robin.client import Provisioning, RobinApiError, VolumeRef, VolumeTaken

REF = VolumeRef("rbd", "team-a", "pvc-1")
QUOTA = {"max_bytes": 2**30, "max_volumes": 10, "max_snapshots": 10}


class FakeRobin:
    """What the core asks of RobinClient: projects, volumes by ref, and clusters; every call is counted."""

    def __init__(self):
        self.projects: set[str] = set()
        self.volumes: dict[tuple, dict] = {}
        self.clusters = {"ceph": {"fsid": "f5", "monitors": ["10.0.0.1:6789"], "reachable": True}}
        self.calls: list[str] = []

    def get_project(self, project):
        self.calls.append("get_project")
        if project not in self.projects:
            raise RobinApiError(404, "project_not_found", project)
        return {"name": project}

    def create_project(self, project, quota):
        self.calls.append("create_project")
        self.projects.add(project)
        return {"name": project, "quota": quota}

    def create_volume(self, kind, project, name, size_bytes, **fields):
        self.calls.append("create_volume")
        if project not in self.projects:
            raise RobinApiError(404, "project_not_found", project)
        if (kind, project, name) in self.volumes:
            raise RobinApiError(409, "name_taken", name)
        volume = {"name": name, "size_bytes": size_bytes, "state": "available", "cluster": "ceph", "pool": "rbd",
                  **fields}
        self.volumes[kind, project, name] = volume
        return volume

    def get_volume(self, kind, project, name):
        self.calls.append("get_volume")
        if (kind, project, name) not in self.volumes:
            raise RobinApiError(404, "volume_not_found", name)
        return self.volumes[kind, project, name]

    def get_cluster(self, name):
        self.calls.append("get_cluster")
        return self.clusters[name]


@pytest.fixture
def robin() -> FakeRobin:
    return FakeRobin()


def provision(core: Provisioning, owner="k8s-claim:1", **kwargs):
    return core.provision(REF, 2**20, owner=owner, quota=QUOTA, fields={}, **kwargs)


def test_the_project_is_made_once_then_known(robin):
    core = Provisioning(robin)
    made = provision(core)
    assert made.created and made.volume["created_for"] == "k8s-claim:1"
    assert robin.calls == ["get_project", "create_project", "create_volume"]
    robin.calls.clear()
    core.provision(VolumeRef("rbd", "team-a", "pvc-2"), 2**20, owner="k8s-claim:2", quota=QUOTA, fields={})
    assert robin.calls == ["create_volume"]


def test_a_project_deleted_meanwhile_is_made_again_on_the_retry(robin):
    core = Provisioning(robin)
    core.ensure_project("team-a", QUOTA)
    robin.projects.clear()
    with pytest.raises(RobinApiError) as caught:
        provision(core)
    assert caught.value.code == "project_not_found"
    assert provision(core).created and "team-a" in robin.projects


def test_a_taken_name_is_the_callers_only_when_robin_made_it_for_the_caller(robin):
    core = Provisioning(robin)
    provision(core, owner="csi:pvc-1")
    again = provision(core, owner="csi:pvc-1")
    assert not again.created and again.volume["created_for"] == "csi:pvc-1"
    with pytest.raises(VolumeTaken) as caught:
        provision(core, owner="k8s-claim:1", adopt_unrecorded=True)
    assert caught.value.volume["created_for"] == "csi:pvc-1"


def test_an_unrecorded_volume_is_adopted_only_where_the_caller_allows_it(robin):
    core = Provisioning(robin)
    robin.projects.add("team-a")
    robin.volumes["rbd", "team-a", "pvc-1"] = {"name": "pvc-1", "state": "available", "created_for": None}
    with pytest.raises(VolumeTaken):
        provision(core)
    assert not provision(core, adopt_unrecorded=True).created


def test_a_name_taken_outside_the_project_is_no_ones_to_take(robin):
    def taken_in_another_project(*args, **kwargs):
        raise RobinApiError(409, "name_taken", "the pool has an image of that name")

    core = Provisioning(robin)
    robin.create_volume = taken_in_another_project
    with pytest.raises(VolumeTaken) as caught:
        provision(core, adopt_unrecorded=True)
    assert caught.value.volume is None and "outside project team-a" in str(caught.value)


def test_cluster_descriptions_are_kept_unless_the_cluster_was_unreachable(robin):
    core = Provisioning(robin)
    volume = provision(core).volume
    context = core.volume_context(REF, volume)
    assert (context["clusterID"], context["monitors"], context["imageName"]) == ("f5", "10.0.0.1:6789", "pvc-1")
    core.cluster("ceph")
    assert robin.calls.count("get_cluster") == 1
    robin.clusters["dead"] = {"reachable": False}
    core.cluster("dead")
    core.cluster("dead")
    assert robin.calls.count("get_cluster") == 3


def test_a_token_that_may_not_read_clusters_gets_an_empty_description(robin):
    def forbidden(name):
        raise RobinApiError(403, "forbidden", "no")

    robin.get_cluster = forbidden
    assert Provisioning(robin).cluster("ceph") == {}
