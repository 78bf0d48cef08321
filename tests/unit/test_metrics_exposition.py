"""The scrape's project and pool gauges are written as text by robin itself (robin.metrics.fleet_exposition):
prometheus_client's own parser must read them back, label values quoted as the format says, beside the
families prometheus_client writes."""
from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from robin import metrics

SUMMED_AT = datetime(2026, 12, 6, 18, 0, 0, 250000, tzinfo=UTC)
ROWS = {
    "projects": [
        {"project": "alpha", "quota_bytes": 10 * 2**30, "quota_volumes": 20, "provisioned_bytes": 3 * 2**20,
         "used_bytes": 4 * 2**20, "volumes": 2, "quota_exhaustion_seconds": 86400.5},
        # Names are validated on the way in, yet a label value must stay quoted whatever it holds.
        {"project": 'odd "name" \\ with\nnewline', "quota_bytes": 1, "quota_volumes": 1, "provisioned_bytes": 0,
         "used_bytes": None, "volumes": 0, "quota_exhaustion_seconds": None},
    ],
    "pools": [{"cluster": "default", "kind": "rbd", "pool": "rbd", "provisioned_bytes": 3 * 2**20,
               "used_bytes": 4 * 2**20, "volumes": 2}],
    "summed_at": SUMMED_AT,
}


def parsed(text: str) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_fleet_gauges_parse_back_to_their_figures():
    families = {family.name: family for family in text_string_to_metric_families(metrics.fleet_exposition(ROWS))}
    assert all(family.type == "gauge" and family.documentation for family in families.values())
    samples = parsed(metrics.fleet_exposition(ROWS))
    odd = (("project", 'odd "name" \\ with\nnewline'),)
    assert samples[("robin_project_quota_bytes", (("project", "alpha"),))] == 10 * 2**30
    assert samples[("robin_project_used_bytes", (("project", "alpha"),))] == 4 * 2**20
    assert samples[("robin_project_volumes", odd)] == 0 and samples[("robin_project_quota_volumes", odd)] == 1
    assert ("robin_project_used_bytes", odd) not in samples  # nothing measured: no series, not a 0
    assert samples[("robin_project_quota_exhaustion_seconds", (("project", "alpha"),))] == 86400.5
    assert ("robin_project_quota_exhaustion_seconds", odd) not in samples  # never at the current rate: no series
    pool = (("cluster", "default"), ("kind", "rbd"), ("pool", "rbd"))
    assert [samples[(name, pool)] for name in ("robin_pool_provisioned_bytes", "robin_pool_used_bytes",
                                               "robin_pool_volumes")] == [3 * 2**20, 4 * 2**20, 2]
    assert samples[("robin_volume_totals_timestamp_seconds", ())] == SUMMED_AT.timestamp()


def test_a_whole_scrape_parses(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.REQUEST_SECONDS.labels("GET", "/metrics", "200").observe(0.01)
    body, content_type = metrics.render(lambda: ROWS, lambda: {"counts": {"orphan_image": 1}, "surveyed_at": SUMMED_AT},
                                        lambda: [{"cluster": "default", "up": True, "probed_at": SUMMED_AT}])
    samples = parsed(body.decode())
    assert content_type.startswith("text/plain")
    assert samples[("robin_drift_findings", (("kind", "orphan_image"),))] == 1
    assert samples[("robin_ceph_cluster_up", (("cluster", "default"),))] == 1
    assert samples[("robin_project_quota_bytes", (("project", "alpha"),))] == 10 * 2**30
    assert any(name == "robin_http_request_duration_seconds_bucket" for name, _ in samples)
