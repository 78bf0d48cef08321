"""Line charts drawn on the server as SVG geometry (a template writes the elements): no script, no library, nothing
from elsewhere, within the dashboard's Content-Security-Policy."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 78, 12, 10, 26  # margins: the value labels on the left, the times below
TICKS = 4


@dataclass
class Series:
    name: str  # its label, and its CSS class: the colour
    # Polylines' "x,y x,y ..." strings (one point: a dot): a gap of more than two steps between samples breaks the
    # line, so that a time robin did not sample shows as a gap, not as a straight line.
    lines: list[str] = field(default_factory=list)
    points: int = 0
    last: int | None = None


@dataclass
class Chart:
    name: str
    title: str
    width: int
    height: int
    series: list[Series]
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_ticks: list[tuple[float, str]]  # (x, label)
    plot: tuple[int, int, int, int]  # left, top, right, bottom


def line_chart(name: str, title: str, points: list[dict], figures: list[tuple[str, str]], since: datetime,
               until: datetime, step: int, label: Callable[[int], str], unit: int = 1) -> Chart:
    """A chart of `figures` ((key in each point, series name: its label and CSS class)) over [since, until), the
    y axis from 0 to TICKS round steps (of `unit`: 1024 for bytes) above the largest value."""
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    span = max((until - since).total_seconds(), 1.0)
    tick = nice_step(max([point[key] for point in points for key, _ in figures] + [1]) / TICKS, unit)
    top_value = tick * TICKS

    def x(at: datetime) -> float:
        return LEFT + (right - LEFT) * (at - since).total_seconds() / span

    def y(value: float) -> float:
        return bottom - (bottom - TOP) * value / top_value

    series = [_series(key, series_name, points, step, x, y) for key, series_name in figures]
    y_ticks = [(round(y(tick * i), 1), label(tick * i)) for i in range(TICKS + 1)]
    x_ticks = [(round(LEFT + (right - LEFT) * i / TICKS, 1),
                (since + (until - since) * i / TICKS).strftime("%m-%d %H:%M")) for i in range(TICKS + 1)]
    return Chart(name, title, WIDTH, HEIGHT, series, y_ticks, x_ticks, (LEFT, TOP, right, bottom))


def nice_step(least: float, unit: int = 1) -> int:
    """The smallest whole number of 1, 2, 2.5 or 5 times a power of ten, of the largest power of `unit` under
    `least` (1 for counts, 1024 for bytes: 500 MiB, 1 GiB, 2.5 GiB), that is at least `least`; at least 1."""
    scale = 1
    while unit > 1 and least >= scale * unit:
        scale *= unit
    magnitude = 1
    while magnitude * 10 <= least / scale:
        magnitude *= 10
    steps = (m * magnitude * scale for m in (1, 2, 2.5, 5, 10))
    return max(1, next(int(step) for step in steps if step >= least and step == int(step)))


def _series(key: str, name: str, points: list[dict], step: int, x, y) -> Series:
    drawn, line, previous = Series(name), [], None
    for point in points:
        if previous is not None and (point["at"] - previous).total_seconds() > 2 * step and line:
            drawn.lines.append(" ".join(line))
            line = []
        line.append(f"{x(point['at']):.1f},{y(point[key]):.1f}")
        previous = point["at"]
    if line:
        drawn.lines.append(" ".join(line))
    drawn.points = len(points)
    drawn.last = points[-1][key] if points else None
    return drawn
