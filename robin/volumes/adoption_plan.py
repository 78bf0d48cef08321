"""What adopting each orphan of a drift report into a project would ask for, or why it is refused before asking:
one plan for `robin audit drift --adopt-into` on a robin host (robin.volumes.adoption) and through the API
(robin.cli.adoption), so both modes plan and print alike. It reads only the report: no database, no Ceph."""
from __future__ import annotations

from collections.abc import Callable

IMAGES = ("orphan_image", "orphan_robin_image")
DIRECTORIES = ("orphan_directory", "orphan_robin_directory")
SUBVOLUMES = ("orphan_subvolume", "orphan_robin_subvolume")


def plan(findings: list[dict], misplaced: Callable[[dict], str | None]) -> list[dict]:
    """Per orphan among `findings`: the kind and request adopting it would make, or why it is refused (a clone; a
    directory `misplaced` says is not where the project's are, since robin does not move data; a subvolume not
    complete; a directory or subvolume with no quota)."""
    steps = []
    for finding in findings:
        evidence = finding["evidence"]
        if finding["kind"] in IMAGES:
            step = {"collection": "rbd-images", "name": evidence["name"],
                    "spec": {"name": evidence["name"], "pool": evidence["pool"], "cluster": evidence["cluster"]}}
            if evidence.get("parent"):
                step["refused"] = f"a clone of {evidence['parent']}: flatten it first"
        elif finding["kind"] in DIRECTORIES:
            step = {"collection": "cephfs-paths", "name": evidence["path"],
                    "spec": {"name": evidence["name"], "fs": evidence["fs"], "cluster": evidence["cluster"]}}
            elsewhere = misplaced(finding)
            if elsewhere:
                step["refused"] = f"{elsewhere}; robin does not move data"
            elif not evidence.get("quota_bytes"):
                step["refused"] = "no ceph.quota.max_bytes: adopt it through the API with quota_bytes"
        elif finding["kind"] in SUBVOLUMES:
            step = {"collection": "cephfs-paths", "name": f"{evidence['group']}/{evidence['name']}",
                    "spec": {"name": evidence["name"], "group": evidence["group"], "fs": evidence["fs"],
                             "cluster": evidence["cluster"]}}
            if evidence.get("subvolume_state") != "complete":
                step["refused"] = f"{evidence.get('subvolume_state')}, not a complete subvolume"
            elif not evidence.get("quota_bytes"):
                step["refused"] = "no quota: adopt it through the API with quota_bytes"
        else:
            continue
        steps.append(step)
    return steps
