"""What robin's hand-over of a Ceph call to a lane thread (robin/ceph/connection.py, `CephConnection.call`) costs
while other threads of the process run Python, at several interpreter switch intervals.

A thread that gives up the interpreter's lock (for I/O, or to wait for another thread) retakes it behind whichever
thread runs Python, which keeps it until the switch interval has passed. A request thread of a gunicorn worker
shares the lock with its worker's other request threads; a Ceph call through `call` takes it back three times (the
lane thread starts the call, the lane thread is back from the binding, the caller is woken) where the binding
called in the request thread takes it back once. Timed here, in one process, per round and interleaved:

  direct     a function called in this thread (no hand-over: the floor);
  released   `time.sleep(0)`: the lock given up and retaken once, as any I/O does;
  hand-over  `CephConnection.call` with a function that returns at once: the lane's threads, the slot, the
             deadline's wait, each lock retaken as a real call retakes it; no Ceph call (a handle without a
             cluster stands in, so no cluster is needed and the figures are the hand-over's alone).

with --busy threads running Python meanwhile (0: a quiet process; a gunicorn worker of 4 threads under load has up
to 3 others). Prints per switch interval and busy count the median and p99 of each, in microseconds.

    .venv/bin/python benchmarks/lane_handover.py [--switch-intervals 5,1,0.5] [--busy 0,1,3] [--calls 2000]
        [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make robin importable

from robin.ceph.connection import CephConnection, CephHandle  # noqa: E402

WAYS = ("direct", "released", "hand-over")


def connection_without_cluster() -> CephConnection:
    """A connection whose current handle has no cluster behind it: `call` hands functions that ignore it over to
    its lanes as it does for real ones."""
    connection = CephConnection("bench", {"conf_path": "/nonexistent"}, timeout=10.0)
    connection._handle = CephHandle(None, lambda: None)  # noqa: SLF001 - stands in for a connected handle
    return connection


def nothing(_handle=None) -> None:
    return None


def timed(way: str, connection: CephConnection, calls: int) -> list[float]:
    """`calls` of one way, each timed, microseconds."""
    run = {"direct": nothing, "released": lambda: time.sleep(0),
           "hand-over": lambda: connection.call("bench", "a call handed over", nothing, lane="pool bench")}[way]
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        run()
        times.append((time.perf_counter() - began) * 1e6)
    return times


def spin(stop: threading.Event) -> None:
    """Python running, as a request thread's own work does (parsing, SQLAlchemy, serialising)."""
    while not stop.is_set():
        sum(range(300))


def measure(connection: CephConnection, switch_ms: float, busy: int, calls: int) -> dict[str, list[float]]:
    sys.setswitchinterval(switch_ms / 1000)
    stop = threading.Event()
    spinners = [threading.Thread(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
    for thread in spinners:
        thread.start()
    try:
        return {way: timed(way, connection, calls) for way in WAYS}
    finally:
        stop.set()
        for thread in spinners:
            thread.join()
        sys.setswitchinterval(0.005)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def numbers(text: str, kind=float) -> list:
    return [kind(item) for item in text.split(",") if item.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switch-intervals", type=numbers, default=[5.0, 1.0, 0.5],
                        help="milliseconds, comma-separated")
    parser.add_argument("--busy", type=lambda text: numbers(text, int), default=[0, 1, 3],
                        help="threads running Python meanwhile, comma-separated")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per way, round, interval and busy count")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every interval and busy count")
    args = parser.parse_args()
    connection = connection_without_cluster()
    timed("hand-over", connection, 100)  # the lane's first thread started, untimed
    samples: dict[tuple[float, int, str], list[float]] = {}
    began_load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for busy in args.busy:
            for switch_ms in args.switch_intervals:
                for way, times in measure(connection, switch_ms, busy, args.calls).items():
                    samples.setdefault((switch_ms, busy, way), []).extend(times)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"{began_load:.2f} -> {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.calls} calls per cell\n")
    print("| busy threads | switch interval ms | " + " | ".join(f"{way} p50 / p99 µs" for way in WAYS) + " |")
    print("|---:|---:|" + "---:|" * len(WAYS))
    for busy in args.busy:
        for switch_ms in args.switch_intervals:
            cells = [samples[(switch_ms, busy, way)] for way in WAYS]
            print(f"| {busy} | {switch_ms:g} | " + " | ".join(
                f"{statistics.median(times):.1f} / {percentile(times, 99):.1f}" for times in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
