"""The usage report as text for `robin audit usage`: tables for people, CSV for spreadsheets."""
from __future__ import annotations

import csv
import io

from robin.units import human_bytes

PROJECT_COLUMNS = ("project", "quota_bytes", "provisioned_bytes", "used_bytes", "thin_ratio", "volumes",
                   "snapshots", "unmeasured_volumes", "oldest_measured_at")
VOLUME_COLUMNS = ("project", "kind", "cluster", "pool", "name", "state", "provisioned_bytes", "used_bytes",
                  "method", "measured_at", "age_seconds", "snapshots")
POOL_COLUMNS = ("cluster", "kind", "pool", "provisioned_bytes", "used_bytes", "thin_ratio", "volumes")
CLUSTER_COLUMNS = ("name", "total_bytes", "used_bytes", "avail_bytes", "error")


def _cell(column: str, value) -> str:
    if value is None:
        return "-"
    return human_bytes(value) if column.endswith("_bytes") else str(value)


def _table(title: str, columns, rows) -> str:
    cells = [[column.upper() for column in columns]] + [[_cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in cells]
    return f"{title}\n" + "\n".join(lines) + "\n"


def as_table(report: dict, with_volumes: bool) -> str:
    parts = [f"usage report generated at {report['generated_at']}\n",
             _table("CLUSTERS (ceph df)", CLUSTER_COLUMNS, report["clusters"]),
             _table("POOLS", POOL_COLUMNS, report["pools"]),
             _table("PROJECTS", PROJECT_COLUMNS, report["projects"]),
             _table("TOP CONSUMERS", VOLUME_COLUMNS, report["top_consumers"])]
    if with_volumes:
        parts.append(_table("VOLUMES", VOLUME_COLUMNS, report["volumes"]))
    return "\n".join(parts)


def as_csv(rows: list[dict], columns) -> str:
    """Raw figures (bytes as integers), one row per project or volume."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
