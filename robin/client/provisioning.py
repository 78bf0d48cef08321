"""Making a volume for Kubernetes: the steps robin's provisioner (a claim's volume) and the CSI controller (a
CreateVolume) share, once, so that a fix lands in both.

Each ensures the volume's project, asks robin to create the volume recorded as made for its caller (robin's
`created_for`: `k8s-claim:<uid>`, `csi:<name>`), and, when robin has that name already, takes the volume over only
if robin's record names that same caller: a retry, or a second replica, finds what its first attempt made, never a
volume made for someone else. A node is told where the volume is by its volume context, which needs the cluster's
fsid and monitors, kept here a few minutes.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from robin.client.rest import RobinApiError, RobinClient, VolumeRef

CLUSTER_INFO_TTL_S = 300.0
NOT_FOUND_CODES = ("volume_not_found", "project_not_found")


def volume_context(ref: VolumeRef, volume: dict, cluster: dict, monitors: list[str]) -> dict[str, str]:
    """What a node needs to map or mount a volume (a CSI volume_context, a PV's csi volumeAttributes): robin's
    answer for the volume, and its cluster's description (fsid) and monitors."""
    context = {"type": ref.kind, "project": ref.project, "cluster": volume["cluster"],
               "clusterID": cluster.get("fsid", ""), "monitors": ",".join(monitors)}
    if ref.kind == "rbd":
        context.update(pool=volume["pool"], imageName=volume["name"])
    else:
        context.update(fsName=volume["fs"], path=volume["path"])
    return context


def made_for(volume: dict, owner: str, *, unrecorded_ok: bool) -> bool:
    """robin records `volume` as made for `owner`. A volume recorded as made for nothing (made before robin kept the
    record, or by a person) counts only where the caller knows it can be nobody else's (`unrecorded_ok`)."""
    recorded = volume.get("created_for")
    return recorded == owner or (recorded is None and unrecorded_ok)


class VolumeTaken(Exception):
    """robin has a volume of the name already and it is not the caller's: `volume` is robin's answer for it, or
    None when the name is taken outside the project (names are unique per pool or file system, across projects)."""

    def __init__(self, ref: VolumeRef, volume: dict | None):
        if volume is None:
            where = f"outside project {ref.project}"
        else:
            where = f"made for {volume.get('created_for') or 'nothing'}"
        super().__init__(f"the name {ref.name} is taken in robin by a volume {where}")
        self.ref, self.volume = ref, volume


@dataclass(frozen=True)
class Provisioned:
    volume: dict  # robin's answer
    created: bool  # False: robin had it already, made for this caller (by an earlier attempt, or being made)


class Provisioning:
    """The shared steps over one RobinClient; thread-safe. It remembers the projects it has seen exist and the
    clusters' descriptions, so a volume costs one request to robin, not three."""

    def __init__(self, robin: RobinClient):
        self.robin = robin
        self._lock = threading.Lock()
        self._known_projects: set[str] = set()
        self._clusters: dict[str, tuple[float, dict]] = {}

    def provision(self, ref: VolumeRef, size: int, *, owner: str, quota: dict, fields: dict,
                  adopt_unrecorded: bool = False) -> Provisioned:
        """The volume `ref` of `size` bytes made for `owner` (robin's create `fields`: cluster, pool, features,
        metadata, source, fs), in its project, made with `quota` if missing. A volume of that name robin already
        has is the answer only when made for `owner` (or recorded as made for nothing, with `adopt_unrecorded`);
        else VolumeTaken. robin's other refusals are raised as they are."""
        self.ensure_project(ref.project, quota)
        try:
            volume = self.robin.create_volume(ref.kind, ref.project, ref.name, size, created_for=owner, **fields)
            return Provisioned(volume, created=True)
        except RobinApiError as exc:
            if exc.code == "project_not_found":  # deleted since it was seen: the caller's retry makes it again
                with self._lock:
                    self._known_projects.discard(ref.project)
            if exc.code != "name_taken":
                raise
        volume = self.volume(ref)  # an earlier attempt made it, or is making it; or it is someone else's
        if volume is None or not made_for(volume, owner, unrecorded_ok=adopt_unrecorded):
            raise VolumeTaken(ref, volume)
        return Provisioned(volume, created=False)

    def ensure_project(self, project: str, quota: dict) -> None:
        """Creates `project` with `quota` unless it exists (a concurrent creation counts as existing)."""
        with self._lock:
            if project in self._known_projects:
                return
        try:
            self.robin.get_project(project)
        except RobinApiError as exc:
            if exc.code != "project_not_found":
                raise
            self._create_project(project, quota)
        with self._lock:
            self._known_projects.add(project)

    def _create_project(self, project: str, quota: dict) -> None:
        try:
            self.robin.create_project(project, quota)
        except RobinApiError as exc:
            if exc.code != "project_exists":
                raise

    def volume(self, ref: VolumeRef) -> dict | None:
        """robin's answer for the volume, or None when it (or its project) does not exist."""
        try:
            return self.robin.get_volume(ref.kind, ref.project, ref.name)
        except RobinApiError as exc:
            if exc.code in NOT_FOUND_CODES:
                return None
            raise

    def cluster(self, name: str) -> dict:
        """robin's description of a cluster (fsid, monitors), kept a few minutes once robin could reach it. A token
        that may not read clusters gets {}: the node then lacks fsid and monitors unless the caller names them."""
        with self._lock:
            cached = self._clusters.get(name)
        if cached and time.monotonic() - cached[0] < CLUSTER_INFO_TTL_S:
            return cached[1]
        try:
            detail = self.robin.get_cluster(name)
        except RobinApiError as exc:
            if exc.status != 403:
                raise
            detail = {}
        if detail.get("reachable") is not False:  # an unreachable one has no fsid nor monitors: ask again next time
            with self._lock:
                self._clusters[name] = (time.monotonic(), detail)
        return detail

    def volume_context(self, ref: VolumeRef, volume: dict) -> dict[str, str]:
        """The volume context of robin's answer `volume`, with its cluster's own monitors."""
        cluster = self.cluster(volume["cluster"])
        return volume_context(ref, volume, cluster, list(cluster.get("monitors") or ()))
