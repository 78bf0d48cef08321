"""The node's cluster map: which monitors a cluster (by its fsid, a volume context's `clusterID`) has now.

The file is ceph-csi's `config.json` (`[{"clusterID": "<fsid>", "monitors": ["ip:port", ...]}, ...]`; other keys of
an entry are ignored), mounted from a ConfigMap. It is read at every stage, never cached: kubelet updates a mounted
ConfigMap in place, and a moved monitor must reach the next stage without restarting the plugin. A PV made before
PVs were looked up here still carries its monitors in its volume context: those are used when the map does not
know its cluster.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from csi_shim.errors import failed_precondition, invalid
from robin.mounts.volume import MONITOR

log = logging.getLogger("csi_shim")


class ClusterMap:
    def __init__(self, path: str):
        self.path = path

    def monitors(self, cluster_id: str) -> list[str]:
        """The monitors the map lists for `cluster_id`, [] when it lists none or the file does not exist."""
        entries = self._read()
        for entry in entries:
            if entry["clusterID"] == cluster_id:
                return entry["monitors"]
        return []

    def _read(self) -> list[dict]:
        try:
            with open(self.path) as handle:
                text = handle.read()
        except FileNotFoundError:
            log.warning("the cluster map %s does not exist: monitors come from the volume contexts", self.path)
            return []
        except OSError as exc:
            raise failed_precondition(f"the cluster map {self.path} cannot be read: {exc.strerror}") from exc
        try:
            entries = json.loads(text) if text.strip() else []
        except ValueError as exc:
            raise self._malformed(f"not JSON ({exc})") from exc
        if not isinstance(entries, list):
            raise self._malformed("not a list")
        for entry in entries:
            self._check(entry)
        return entries

    def _check(self, entry) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("clusterID"), str):
            raise self._malformed(f"{entry!r} has no clusterID")
        monitors = entry.get("monitors")
        if not isinstance(monitors, list) or not all(isinstance(m, str) and MONITOR.fullmatch(m) for m in monitors):
            raise self._malformed(f"the monitors of {entry['clusterID']} must be a list of \"ip:port\", "
                                  f"not {monitors!r}")

    def _malformed(self, what: str):
        return failed_precondition(f"the cluster map {self.path} is malformed: {what}; it must be "
                                   f'[{{"clusterID": "<fsid>", "monitors": ["ip:port", ...]}}, ...]')


def with_monitors(context: Mapping[str, str], clusters: ClusterMap | None) -> Mapping[str, str]:
    """The volume context with its cluster's monitors: the map's when it lists the cluster (they win over the
    ones a PV was made with, which may have moved since), else the context's own."""
    cluster_id = context.get("clusterID", "")
    if clusters is None or not cluster_id:
        if not context.get("monitors"):
            raise invalid("volume_context has no monitors and this node has no cluster map (ROBIN_CSI_CLUSTER_MAP) "
                          "to look its clusterID up in: give the PV monitors, or the node a cluster map")
        return context
    monitors = clusters.monitors(cluster_id)
    if monitors:
        log.info("cluster %s: monitors %s, from the cluster map", cluster_id, ",".join(monitors))
        return {**context, "monitors": ",".join(monitors)}
    if context.get("monitors"):
        log.info("cluster %s is not in the cluster map: monitors %s, from the volume context", cluster_id,
                 context["monitors"])
        return context
    raise failed_precondition(f"cluster {cluster_id} is not in the cluster map {clusters.path} and the volume "
                              f'context names no monitors: add {{"clusterID": "{cluster_id}", "monitors": '
                              f'["ip:port", ...]}} to the map (its ConfigMap)')
