"""How often Python's cyclic garbage collector runs per request, and what it costs, as robin serve's workers run it.

In-process, through Flask's test client, on a dev Ceph cluster this script starts and a fresh SQLite database (or,
with --db postgresql, a PostgreSQL server it starts), after `gc.collect(); gc.freeze()` as robin/gunicorn_conf.py's
post_worker_init does. Two requests:

  rbd_create  POST /api/v2/projects/{p}/rbd-images (1 GiB);
  list_page   GET  /api/v2/projects/{p}/rbd-images?limit=100 (100 images there);

each --iterations times per collector threshold (--thresholds, gen0 allocations; gen1 and gen2 keep Python's 10),
interleaved. `gc.callbacks` counts the collections of each generation and times them; a collection holds the
interpreter's lock, so under concurrency every other thread of the worker waits through it. Prints per request and
threshold: collections of each generation per request (mean), the collector's time per request (mean) and the
request's median time.

    .venv/bin/python benchmarks/gc_per_request.py [--iterations 200] [--thresholds 700,10000] [--db sqlite]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `benchmarks` and robin importable

from benchmarks.in_process import GiB, cluster_and_database, machine, robin_app  # noqa: E402

PAGE = 100
OPS = ("rbd_create", "list_page")


class Collections:
    """Collections per generation and their seconds, while `counting`."""

    def __init__(self):
        self.counts = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0
        self.counting = False
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if not self.counting:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.counts[info["generation"]] += 1

    def reset(self) -> None:
        self.counts, self.seconds = [0, 0, 0], 0.0


def run(args, ceph_conf: str, database_url: str) -> None:
    with robin_app(database_url, ceph_conf, "gc") as requests:
        for i in range(PAGE):
            requests.image(f"page-{i:03d}")
        page = f"{requests.images}?limit={PAGE}"
        ops = {"rbd_create": lambda: requests.call("POST", requests.images, 201,
                                                   {"name": f"c-{uuid.uuid4().hex[:10]}", "size_bytes": GiB}),
               "list_page": lambda: requests.call("GET", page, 200)}
        for op in ops.values():  # warm: the first request of each kind loads what it needs
            op()
        gc.collect()
        gc.freeze()  # as robin serve's workers do
        results = measure(ops, args)
        print(f"{machine()}; {args.iterations} requests per cell, interleaved\n")
        print("| request | gen0 threshold | collections per request, gen0 / gen1 / gen2 | collector ms per request "
              "| request ms, median |")
        print("|---|---:|---|---:|---:|")
        for (op, threshold), (counts, seconds, times) in results.items():
            per = " / ".join(f"{count / args.iterations:.2f}" for count in counts)
            print(f"| {op} | {threshold} | {per} | {seconds * 1000 / args.iterations:.3f} | "
                  f"{statistics.median(times):.2f} |")


def measure(ops: dict, args) -> dict:
    collections = Collections()
    results = {(op, threshold): ([0, 0, 0], 0.0, []) for op in ops for threshold in args.thresholds}
    for _ in range(args.iterations):
        for threshold in args.thresholds:
            gc.set_threshold(threshold, 10, 10)
            for op, request in ops.items():
                counts, seconds, times = results[(op, threshold)]
                collections.reset()
                collections.counting = True
                began = time.perf_counter()
                request()
                times.append((time.perf_counter() - began) * 1000)
                collections.counting = False
                results[(op, threshold)] = ([a + b for a, b in zip(counts, collections.counts, strict=True)],
                                            seconds + collections.seconds, times)
    gc.set_threshold(700, 10, 10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--thresholds", type=lambda text: [int(n) for n in text.split(",")], default=[700, 10_000],
                        help="gen0 thresholds, comma-separated (Python's: 700)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with cluster_and_database(args.db, "rbg") as (ceph_conf, database_url):
        run(args, ceph_conf, database_url)


if __name__ == "__main__":
    main()
