"""The usage report's pure parts: the thin-provisioning ratio and the CLI's text and CSV."""
from __future__ import annotations

import csv
import io

import pytest

from robin.audit.usage import thin_ratio
from robin.audit.usage_report import PROJECT_COLUMNS, as_csv, as_table
from robin.config import ConfigError, Settings
from robin.units import human_bytes


def test_thin_ratio_is_provisioned_over_used_and_none_when_nothing_is_used():
    assert thin_ratio(100, 25) == 4.0
    assert thin_ratio(10, 3) == 3.33
    assert thin_ratio(100, 0) is None


def test_human_bytes():
    assert human_bytes(None) == "-" and human_bytes(512) == "512 B"
    assert human_bytes(64 * 2**20) == "64.0 MiB" and human_bytes(3 * 2**40) == "3.0 TiB"


PROJECT = {"project": "p", "quota_bytes": 2**30, "provisioned_bytes": 2**29, "used_bytes": None, "thin_ratio": None,
           "volumes": 1, "snapshots": 0, "unmeasured_volumes": 1, "oldest_measured_at": None}


def test_csv_keeps_raw_byte_counts():
    [row] = list(csv.DictReader(io.StringIO(as_csv([PROJECT], PROJECT_COLUMNS))))
    assert row["quota_bytes"] == str(2**30) and row["used_bytes"] == ""


def test_table_has_every_section():
    report = {"generated_at": "2026-11-27T00:00:00+00:00", "clusters": [], "pools": [], "projects": [PROJECT],
              "top_consumers": [], "volumes": []}
    text = as_table(report, with_volumes=True)
    for title in ("CLUSTERS", "POOLS", "PROJECTS", "TOP CONSUMERS", "VOLUMES"):
        assert title in text
    assert any(line.startswith("p ") and "1.0 GiB" in line and "512.0 MiB" in line for line in text.splitlines())


@pytest.mark.parametrize("value", [0, 257])
def test_usage_parallelism_is_bounded(value):
    with pytest.raises(ConfigError, match="ROBIN_USAGE_PARALLELISM"):
        Settings(usage_parallelism=value).validate()
