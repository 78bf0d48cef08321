"""A progress bar for a copy: bytes, files, rate and ETA, redrawn in place on a terminal twice a second.

Counters are bumped by the copy's threads; one drawing thread reads them. The rate is measured over the last
few seconds, not since the start, so the ETA follows a copy that moves from small files to large ones.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque

from robin.units import human_bytes

REDRAW_S = 0.5
RATE_WINDOW_S = 5.0


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def render(label: str, done_bytes: int, total_bytes: int, done_files: int, total_files: int, rate: float,
           width: int = 24) -> str:
    """One line: `label [#####.....]  41%  1.2 GiB/3.0 GiB  1,024/2,500 files  85.0 MiB/s  ETA 00:21`."""
    fraction = min(1.0, done_bytes / total_bytes) if total_bytes else (1.0 if done_files >= total_files else 0.0)
    filled = int(fraction * width)
    eta = (total_bytes - done_bytes) / rate if rate > 0 and total_bytes >= done_bytes else None
    return (f"{label} [{'#' * filled}{'.' * (width - filled)}] {fraction * 100:3.0f}%  "
            f"{human_bytes(done_bytes)}/{human_bytes(total_bytes)}  {done_files:,}/{total_files:,} files  "
            f"{human_bytes(rate)}/s  ETA {human_duration(eta)}")


class Progress:
    def __init__(self, total_bytes: int, total_files: int, label: str = "", stream=None, enabled: bool = True):
        self.total_bytes, self.total_files, self.label = total_bytes, total_files, label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done_bytes = self.done_files = 0
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, nbytes: int, files: int = 0) -> None:
        with self._lock:
            self.done_bytes += nbytes
            self.done_files += files

    def rate(self) -> float:
        """Bytes per second over the last RATE_WINDOW_S."""
        now = time.monotonic()
        with self._lock:
            self._samples.append((now, self.done_bytes))
            while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
                self._samples.popleft()
            (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        return (last - first) / (last_at - first_at) if last_at > first_at else 0.0

    def line(self) -> str:
        rate = self.rate()
        return render(self.label, self.done_bytes, self.total_bytes, self.done_files, self.total_files, rate)

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._draw, name="migrate-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()

    def _draw(self) -> None:
        while not self._stop.wait(REDRAW_S):
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
