"""Prometheus metrics.

Under gunicorn every worker is its own process, so histograms are written to
PROMETHEUS_MULTIPROC_DIR (set by `robin serve`) and merged at scrape time. Quota and volume gauges are not
kept in memory at all: they are read from the database when scraped (quotas as they are, volume totals as
the maintenance leader last summed them), so every worker reports the same truth.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from robin import config
from robin.db import utcnow

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUEST_SECONDS = Histogram(
    "robin_http_request_duration_seconds", "HTTP request latency by route",
    ["method", "route", "status"], buckets=LATENCY_BUCKETS)
CEPH_OP_SECONDS = Histogram(
    "robin_ceph_operation_duration_seconds", "Ceph binding call latency by operation",
    ["cluster", "operation", "outcome"], buckets=LATENCY_BUCKETS)
# Set by every worker's maintenance loop at each round; "livemax": a replica reports 1 while any of its live
# workers holds the lock, and a dead worker's value is dropped (gunicorn_conf.child_exit).
MAINTENANCE_LEADER = Gauge(
    "robin_maintenance_leader", "1 while a worker of this robin serve holds the maintenance lock (purge, reconcile, "
    "usage refresh), else 0; across replicas at most one reports 1", multiprocess_mode="livemax")
# One series per live gunicorn worker (its pid): how evenly the workers share the connections (BENCHMARKS.md).
WORKER_REQUESTS = Gauge(
    "robin_worker_requests", "Requests this process (a gunicorn worker: pid) has answered since it started",
    multiprocess_mode="liveall")


@contextmanager
def timed_ceph_op(cluster: str, operation: str) -> Iterator[None]:
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        CEPH_OP_SECONDS.labels(cluster, operation, outcome).observe(time.perf_counter() - start)


# The fleet's gauges: (name, help, the row's key), per project and per pool. Rendered as text directly: a
# thousand projects make ~7,000 samples, which prometheus_client's exposition writes about seven times slower
# (BENCHMARKS.md, the metrics scrape).
PROJECT_GAUGES = (
    ("robin_project_quota_bytes", "Quota: bytes", "quota_bytes"),
    ("robin_project_quota_volumes", "Quota: volumes", "quota_volumes"),
    ("robin_project_provisioned_bytes", "Bytes promised to live volumes", "provisioned_bytes"),
    ("robin_project_volumes", "Live volumes", "volumes"),
    ("robin_project_used_bytes", "Bytes the project's volumes occupy in Ceph (last measurement)", "used_bytes"),
    ("robin_project_quota_exhaustion_seconds", "Seconds until the project's provisioned or used bytes reach its "
     "byte quota at their growth rate over ROBIN_USAGE_FORECAST_DAYS (0: reached); absent when neither grows "
     "towards it", "quota_exhaustion_seconds"),
)
POOL_GAUGES = (
    ("robin_pool_provisioned_bytes", "Bytes promised to live volumes in the pool (or CephFS file system)",
     "provisioned_bytes"),
    ("robin_pool_used_bytes", "Bytes robin's volumes occupy in the pool (last measurement)", "used_bytes"),
    ("robin_pool_volumes", "Live volumes in the pool", "volumes"),
)
TOTALS_TIMESTAMP = "robin_volume_totals_timestamp_seconds"


def _label(value: str) -> str:
    """A label value as the text exposition format quotes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _gauge(name: str, help_text: str, samples) -> str:
    """One gauge family in the text exposition format; `samples` are (labels as text, a number)."""
    lines = [f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"]
    lines += [f"{name}{{{labels}}} {value}\n" for labels, value in samples]
    return "".join(lines)


def fleet_exposition(rows: dict) -> str:
    """Quota and volume gauges per project and pool (robin.audit.usage.scrape_rows), and when their
    totals were summed."""
    projects = [(f'project="{_label(row["project"])}"', row) for row in rows["projects"]]
    pools = [(f'cluster="{_label(row["cluster"])}",kind="{row["kind"]}",pool="{_label(row["pool"])}"', row)
             for row in rows["pools"]]
    text = [_gauge(name, help_text, ((labels, row[key]) for labels, row in projects if row[key] is not None))
            for name, help_text, key in PROJECT_GAUGES]
    text += [_gauge(name, help_text, ((labels, row[key]) for labels, row in pools))
             for name, help_text, key in POOL_GAUGES]
    text.append(f"# HELP {TOTALS_TIMESTAMP} Unix time at which the totals behind robin_project_provisioned_bytes, "
                f"robin_project_volumes, robin_project_used_bytes and robin_pool_* were summed\n"
                f"# TYPE {TOTALS_TIMESTAMP} gauge\n{TOTALS_TIMESTAMP} {rows['summed_at'].timestamp():.3f}\n")
    return "".join(text)


def _age_seconds(at: datetime, now: datetime) -> float:
    return max(0.0, (now - at).total_seconds())


class DriftCollector:
    """Drift findings by kind from the last stored survey (robin.audit.drift, run by the maintenance
    loop), and that survey's age; nothing before the first survey."""

    def __init__(self, read_counts: Callable[[], dict]):
        self._read_counts = read_counts

    def collect(self):
        last = self._read_counts()
        family = GaugeMetricFamily("robin_drift_findings", "Drift findings between the database and Ceph by kind "
                                   "(last survey)", labels=["kind"])
        for kind, count in sorted(last["counts"].items()):
            family.add_metric([kind], count)
        yield family
        if last["surveyed_at"] is not None:
            yield GaugeMetricFamily("robin_drift_survey_age_seconds", "Seconds since the drift survey whose "
                                    "findings robin_drift_findings reports",
                                    value=_age_seconds(last["surveyed_at"], utcnow()))


class ClusterHealthCollector:
    """1 while a registered cluster's monitors and the OSDs of robin's pools there answered the last
    probe, else 0, and that probe's age: the maintenance loop probes and records, the scrape only reads."""

    def __init__(self, read_rows: Callable[[], list[dict]]):
        self._read_rows = read_rows

    def collect(self):
        up = GaugeMetricFamily("robin_ceph_cluster_up", "Whether the Ceph cluster served robin's I/O at the last "
                               "probe", labels=["cluster"])
        age = GaugeMetricFamily("robin_ceph_cluster_probe_age_seconds", "Seconds since the probe "
                                "robin_ceph_cluster_up reports", labels=["cluster"])
        now = utcnow()
        for row in self._read_rows():
            up.add_metric([row["cluster"]], 1 if row["up"] else 0)
            age.add_metric([row["cluster"]], _age_seconds(row["probed_at"], now))
        yield up
        yield age


def render(fleet_rows: Callable[[], dict], drift_counts: Callable[[], dict] | None = None,
           cluster_health: Callable[[], list[dict]] | None = None) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if config.prometheus_multiproc_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_SECONDS)
        registry.register(CEPH_OP_SECONDS)
        registry.register(MAINTENANCE_LEADER)
        registry.register(WORKER_REQUESTS)
    if drift_counts is not None:
        registry.register(DriftCollector(drift_counts))
    if cluster_health is not None:
        registry.register(ClusterHealthCollector(cluster_health))
    return generate_latest(registry) + fleet_exposition(fleet_rows()).encode(), CONTENT_TYPE_LATEST
