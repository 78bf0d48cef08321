"""`robin audit drift --adopt-into P [--yes]` through robin's API: the drift report's orphans adopted one request
each (`POST .../rbd-images:adopt`, `.../cephfs-paths:adopt`), each adopted or refused on its own, so that one
refusal (the quota, a name taken) stops nothing else. The steps have the shape robin.volumes.adoption gives them,
so both modes print alike."""
from __future__ import annotations

from urllib.parse import quote

import click

from robin.client import RobinApiError, RobinClient

IMAGES = ("orphan_image", "orphan_robin_image")
DIRECTORIES = ("orphan_directory", "orphan_robin_directory")
SUBVOLUMES = ("orphan_subvolume", "orphan_robin_subvolume")


def plan(findings: list[dict], project: str) -> list[dict]:
    """Per orphan among `findings`: the request adopting it into `project` would make, or why it is refused before
    asking (a clone; a directory outside the project's, which robin does not move; a subvolume not complete; one
    with no quota)."""
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
            if finding["project"] != project:
                step["refused"] = (f"not in the project's directory (it is in {finding['project']!r}'s); robin "
                                   f"does not move data")
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


def adopt(client: RobinClient, project: str, steps: list[dict], progress: bool) -> list[dict]:
    """Carry out a plan, one orphan at a time, with a progress bar on stderr when `progress`."""
    results = []
    with click.progressbar(steps, label=f"adopting into {project}", file=click.get_text_stream("stderr"),
                           show_pos=True, hidden=not progress) as bar:
        for step in bar:
            results.append(_adopted(client, project, step) if "refused" not in step else step)
    return results


def _adopted(client: RobinClient, project: str, step: dict) -> dict:
    try:
        client.request("POST", f"/api/v2/projects/{quote(project, safe='')}/{step['collection']}:adopt",
                       json=step["spec"])
    except RobinApiError as exc:
        if exc.status in (0, 401):  # robin is unreachable or the token is wrong: every other step would be too
            raise
        return {**step, "refused": exc.explanation, "code": exc.code}
    return {**step, "adopted": True}
