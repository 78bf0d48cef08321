"""`robin audit drift --adopt-into` through the API plans each orphan kind the drift report names, as the direct
mode (robin.volumes.adoption.plan) does: the requests it would send, or why it refuses before asking."""
from robin.cli import adoption


def _finding(kind: str, project: str | None, **evidence) -> dict:
    return {"kind": kind, "project": project, "evidence": {"cluster": "main", **evidence}}


def test_a_complete_subvolume_with_a_quota_is_adopted_in_its_group():
    finding = _finding("orphan_subvolume", None, fs="cephfs", group="csi", name="csi-vol-1",
                       subvolume_state="complete", quota_bytes=2**30)
    assert adoption.plan([finding], "team") == [{
        "collection": "cephfs-paths", "name": "csi/csi-vol-1",
        "spec": {"name": "csi-vol-1", "group": "csi", "fs": "cephfs", "cluster": "main"}}]


def test_a_subvolume_still_cloning_or_without_a_quota_is_refused_before_asking():
    cloning = _finding("orphan_subvolume", "team", fs="cephfs", group="team", name="a",
                       subvolume_state="in-progress", quota_bytes=None)
    unlimited = _finding("orphan_robin_subvolume", "team", fs="cephfs", group="team", name="b",
                         subvolume_state="complete", quota_bytes=None)
    steps = adoption.plan([cloning, unlimited], "team")
    assert [step["refused"] for step in steps] == ["in-progress, not a complete subvolume",
                                                   "no quota: adopt it through the API with quota_bytes"]


def test_findings_that_are_not_orphans_plan_nothing():
    assert adoption.plan([_finding("size_mismatch", "team", name="x")], "team") == []
