"""`robin audit drift --adopt-into P [--yes]` through robin's API: the drift report's orphans adopted one request
each (`POST .../rbd-images:adopt`, `.../cephfs-paths:adopt`), each adopted or refused on its own, so that one
refusal (the quota, a name taken) stops nothing else. The steps have the shape robin.volumes.adoption gives them,
so both modes print alike."""
from __future__ import annotations

from urllib.parse import quote

import click

from robin.client import RobinApiError, RobinClient
from robin.volumes import adoption_plan


def plan(findings: list[dict], project: str) -> list[dict]:
    """Per orphan among `findings`: the request adopting it into `project` would make, or why it is refused before
    asking (robin.volumes.adoption_plan). The report says which project's directory a directory is in."""
    def misplaced(finding: dict) -> str | None:
        if finding["project"] == project:
            return None
        return f"not in the project's directory (it is in {finding['project']!r}'s)"

    return adoption_plan.plan(findings, misplaced)


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
