"""Sizes as people read them, for the dashboard, the usage report and a copy's progress."""
from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(value: float | None, missing: str = "-") -> str:
    """1536 -> "1.5 KiB": binary units, one decimal above bytes; `missing` for an unknown size."""
    if value is None:
        return missing
    size, unit = float(value), 0
    while abs(size) >= 1024 and unit < len(UNITS) - 1:
        size, unit = size / 1024, unit + 1
    return f"{size:.0f} B" if unit == 0 else f"{size:.1f} {UNITS[unit]}"
