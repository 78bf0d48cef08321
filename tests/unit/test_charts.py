"""The dashboard's server-drawn charts: round axis steps, points placed by time and value, gaps left as gaps."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from robin.ui.charts import BOTTOM, HEIGHT, LEFT, RIGHT, TICKS, TOP, WIDTH, line_chart, nice_step

GiB = 2**30
SINCE = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize("least, unit, step", [
    (0.26, 1, 1), (3, 1, 5), (7, 1, 10), (23, 1, 25), (2.1 * GiB, 1024, 2.5 * GiB), (300 * 2**20, 1024, 500 * 2**20),
    (1500, 1024, 2048),
])
def test_axis_steps_are_round(least, unit, step):
    assert nice_step(least, unit) == step


def test_points_sit_at_their_time_and_value_and_a_gap_breaks_the_line():
    at = [SINCE + timedelta(hours=h) for h in (0, 1, 2, 10)]  # an eight-hour gap before the last
    points = [{"at": moment, "used_bytes": value} for moment, value in zip(at, (0, 2, 4, 8), strict=True)]
    chart = line_chart("bytes", "Bytes", points, [("used_bytes", "used")], SINCE, SINCE + timedelta(hours=20), 3600,
                       str)
    series = chart.series[0]
    assert (series.points, series.last, len(series.lines)) == (4, 8, 2)
    assert series.lines[1] == f"{LEFT + (WIDTH - RIGHT - LEFT) / 2:.1f},{TOP:.1f}"  # mid-range, the axis' top
    first = [tuple(map(float, xy.split(","))) for xy in series.lines[0].split()]
    assert first[0] == (LEFT, HEIGHT - BOTTOM) and [x for x, _ in first] == sorted(x for x, _ in first)
    assert [label for _, label in chart.y_ticks] == [str(2 * i) for i in range(TICKS + 1)]  # 8 in 4 ticks: 2 each
