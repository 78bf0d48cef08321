"""The provisioner's Prometheus metrics, in a registry of its own (it is not part of `robin serve`)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

PROVISIONING_SECONDS = Histogram(
    "robin_provisioner_provisioning_duration_seconds",
    "From the moment the provisioner first saw a claim needing a volume to the PersistentVolume's creation",
    ["type"], buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=REGISTRY)
# A claim's steps one by one, fine-grained: where a claim's time goes between its class's provisioner being asked
# and its PV (a retry's step that finds its work done counts too, in well under a millisecond).
STEP_SECONDS = Histogram(
    "robin_provisioner_step_duration_seconds",
    "A provisioning step, as the provisioner waited for it: hold (the claim's finalizer and volume annotation), "
    "volume (robin's create), pv (the PersistentVolume's create)",
    ["step"], buckets=(0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.0125, 0.015, 0.02,
                       0.03, 0.05, 0.1, 0.25, 1, 5), registry=REGISTRY)
OPERATIONS = Counter(
    "robin_provisioner_operations_total", "Operations finished, by operation and outcome",
    ["operation", "outcome"], registry=REGISTRY)
ERRORS = Counter(
    "robin_provisioner_errors_total", "Failed attempts (each is retried with backoff), by operation and reason",
    ["operation", "reason"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("robin_provisioner_queue_depth", "Claims and volumes waiting to be handled", registry=REGISTRY)
LEADER = Gauge("robin_provisioner_leader", "1 while this replica holds the lease and acts", registry=REGISTRY)
WATCH_RESTARTS = Counter(
    "robin_provisioner_watch_restarts_total", "Watches started again after an expiry (re-list) or an error",
    ["resource", "reason"], registry=REGISTRY)
EVENTS_DROPPED = Counter("robin_provisioner_events_dropped_total", "Kubernetes Events not written: queue full",
                         registry=REGISTRY)


def serve(address: str):
    """Serves /metrics on `address` (host:port); returns the server, to shut it down."""
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=REGISTRY)
    return server
