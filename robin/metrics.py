"""Prometheus metrics.

Under gunicorn every worker is its own process, so histograms are written to
PROMETHEUS_MULTIPROC_DIR (set by `robin serve`) and merged at scrape time. Quota gauges are not
kept in memory at all: they are read from the database when scraped, so every worker reports
the same truth.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUEST_SECONDS = Histogram(
    "robin_http_request_duration_seconds", "HTTP request latency by route",
    ["method", "route", "status"], buckets=LATENCY_BUCKETS)
CEPH_OP_SECONDS = Histogram(
    "robin_ceph_operation_duration_seconds", "Ceph binding call latency by operation",
    ["cluster", "operation", "outcome"], buckets=LATENCY_BUCKETS)


@contextmanager
def timed_ceph_op(cluster: str, operation: str) -> Iterator[None]:
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        CEPH_OP_SECONDS.labels(cluster, operation, outcome).observe(time.perf_counter() - start)


class QuotaCollector:
    """Per-project quota and provisioned bytes, read from the database at scrape time."""

    def __init__(self, read_rows: Callable[[], list[dict]]):
        self._read_rows = read_rows

    def collect(self):
        families = {
            "max_bytes": GaugeMetricFamily("robin_project_quota_bytes", "Quota: bytes", labels=["project"]),
            "max_volumes": GaugeMetricFamily("robin_project_quota_volumes", "Quota: volumes", labels=["project"]),
            "provisioned_bytes": GaugeMetricFamily(
                "robin_project_provisioned_bytes", "Bytes promised to live volumes", labels=["project"]),
            "volumes": GaugeMetricFamily("robin_project_volumes", "Live volumes", labels=["project"]),
        }
        for row in self._read_rows():
            for key, family in families.items():
                family.add_metric([row["project"]], row[key])
        yield from families.values()


def render(quota_rows: Callable[[], list[dict]]) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_SECONDS)
        registry.register(CEPH_OP_SECONDS)
    registry.register(QuotaCollector(quota_rows))
    return generate_latest(registry), CONTENT_TYPE_LATEST
