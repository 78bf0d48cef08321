"""The server stack's share of a write, split: the benchmark client's own CPU against gunicorn's, gunicorn's main
thread against its request threads, and robin serve's worker against benchmarks/linger_worker.py's (a kept-alive
connection's next request served by the thread that answered the last one, measured and not taken).

One run serves benchmarks/bare_rbd_app.py's `POST /echo` (a create's request and answer, no Ceph call, so needs no
cluster) with one gunicorn worker per server (robin's threads per worker, gunicorn's keep-alive), one server per
--worker-classes entry, and times, in --rounds rounds, each server with each client, the pairs in a rotated order:

  requests     a keep-alive `requests.Session` POSTing JSON, as benchmarks/api_vs_binding.py's api and stack
               paths do (the figure comparable with earlier rounds);
  http.client  a keep-alive `http.client.HTTPConnection` POSTing the same bytes: the lightest client in Python;

--requests requests per pair, back to back (the next sent as soon as the last is answered), or with --gap-ms
between them (the client waiting, as api_vs_binding's interleaved paths make it wait). Per pair: the wall time of a
request (median and mean), the client thread's CPU per request (time.thread_time), and the server worker's CPU per
request from /proc (its main thread, the poller, apart from its request threads; 10 ms ticks, hence many requests)
with its context switches.

With --spread N, it instead opens N connections at once to a server of --spread-workers workers per worker class,
each issuing --spread-requests requests back to back (`GET /worker`, which answers the worker's pid), --rounds
times, and counts each worker's connections: gunicorn's workers race for each new connection and a kept-alive
connection stays with its winner, so how the opening burst spreads decides how many workers serve the load.

    .venv/bin/python benchmarks/stack_split.py [--requests 3000] [--rounds 3] [--gap-ms 0,5]
        [--worker-classes robin,linger] [--spread 16 --spread-workers 4] [--json out.json]

The servers are stopped by their pids in `finally`, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `benchmarks` and `tests.support` importable

import requests  # noqa: E402

from benchmarks.api_vs_binding import answers, machine, run_main, stop_cleanly_on_signals, stop_process  # noqa: E402
from benchmarks.create_cpu import CLOCK_TICKS, thread_ticks  # noqa: E402
from robin.config import Settings  # noqa: E402
from tests.support.net import free_port, wait_until  # noqa: E402

WORKER_CLASSES = {"robin": "robin.gunicorn_worker.ThreadWorker",
                  "linger": "benchmarks.linger_worker.ThreadWorker", "gthread": "gthread"}
PATH = "/echo"
BODY = json.dumps({"name": "stack-split-image", "size_bytes": 2**30}).encode()
CLIENTS = ("requests", "http.client")
HTTP_TIMEOUT_S = 60
WARMUP_REQUESTS = 200


@contextmanager
def echo_server(worker_class: str, threads: int, workers: int = 1):
    """bare_rbd_app under gunicorn: (base URL, its first worker's pid)."""
    directory = Path(tempfile.mkdtemp(prefix="robin-bench-split-"))
    port = free_port()
    with open(directory / "gunicorn.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--worker-class", worker_class,
                                    "--no-control-socket", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                                    "--threads", str(threads), "benchmarks.bare_rbd_app:app"],
                                   env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, stdout=log, stderr=log,
                                   start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: (answers(url) and len(children(process.pid)) == workers) or process.poll() is not None,
                       60, worker_class)
            if process.poll() is not None:
                raise RuntimeError(f"{worker_class} exited: {(directory / 'gunicorn.log').read_text()[-2000:]}")
            yield url, children(process.pid)[0]
        finally:
            stop_process(process)
            shutil.rmtree(directory, ignore_errors=True)


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


class RequestsClient:
    def __init__(self, url: str):
        self.url, self.session = url + PATH, requests.Session()

    def send(self) -> None:
        response = self.session.post(self.url, data=BODY, headers={"Content-Type": "application/json"},
                                     timeout=HTTP_TIMEOUT_S)
        if response.status_code != 201:
            raise RuntimeError(f"POST {self.url} -> {response.status_code}")

    def close(self) -> None:
        self.session.close()


class HttpClient:
    def __init__(self, url: str):
        self.connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=HTTP_TIMEOUT_S)

    def send(self) -> None:
        self.connection.request("POST", PATH, body=BODY, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"POST {PATH} -> {response.status}")

    def close(self) -> None:
        self.connection.close()


def timed_block(client, count: int, gap_s: float, worker_pid: int) -> dict:
    """`count` requests on one connection; per request: wall, client CPU, the worker's CPU by thread."""
    for _ in range(WARMUP_REQUESTS):
        client.send()
    walls = []
    before, cpu_before = thread_ticks([worker_pid]), time.thread_time()
    for _ in range(count):
        if gap_s:
            time.sleep(gap_s)
        started = time.perf_counter()
        client.send()
        walls.append(time.perf_counter() - started)
    cpu_after, after = time.thread_time(), thread_ticks([worker_pid])
    main = {"ticks": 0, "voluntary": 0}
    pool = {"ticks": 0, "voluntary": 0}
    for key, (_, utime, stime, voluntary, _) in after.items():
        _, u0, s0, v0, _ = before.get(key, ("", 0, 0, 0, 0))
        side = main if key[1] == worker_pid else pool
        side["ticks"] += utime - u0 + stime - s0
        side["voluntary"] += voluntary - v0
    per = 1000 / count
    return {"wall_p50_ms": statistics.median(walls) * 1000, "wall_mean_ms": statistics.fmean(walls) * 1000,
            "client_cpu_ms": (cpu_after - cpu_before) * per,
            "server_main_cpu_ms": main["ticks"] / CLOCK_TICKS * per, "server_pool_cpu_ms": pool["ticks"] / CLOCK_TICKS
            * per, "server_main_switches": main["voluntary"] / count, "server_pool_switches": pool["voluntary"] / count}


def run(args) -> dict:
    pairs = [(worker, client, gap) for gap in args.gap_ms for worker in args.worker_classes for client in CLIENTS]
    results: dict = {f"{w} | {c} | gap {g}": [] for w, c, g in pairs}
    with ExitStack() as stack:
        servers = {}
        for name in dict.fromkeys(args.worker_classes):
            servers[name] = stack.enter_context(echo_server(WORKER_CLASSES.get(name, name), args.threads))
        for number in range(args.rounds):
            shift = number % len(pairs)
            for worker, client_name, gap in pairs[shift:] + pairs[:shift]:  # rotated: drift hits every pair
                url, pid = servers[worker]
                client = (RequestsClient if client_name == "requests" else HttpClient)(url)
                try:
                    block = timed_block(client, args.requests, gap / 1000, pid)
                finally:
                    client.close()
                block["load_1m"] = os.getloadavg()[0]
                results[f"{worker} | {client_name} | gap {gap}"].append(block)
                print(f"round {number + 1} {worker} {client_name} gap {gap}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in block.items()), flush=True)
    return results


def spread_round(url: str, connections: int, count: int) -> list[int]:
    """Connections per worker (most first) when `connections` open at once, each then `count` requests back to
    back; every connection is answered by one worker throughout."""
    start = threading.Barrier(connections)

    def one() -> int:
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=HTTP_TIMEOUT_S)
        try:
            start.wait()
            pids = set()
            for _ in range(count):
                connection.request("GET", "/worker")
                pids.add(connection.getresponse().read().decode())
            assert len(pids) == 1, pids
            return pids.pop()
        finally:
            connection.close()

    with ThreadPoolExecutor(connections) as pool:
        by_worker = Counter(pool.map(lambda _: one(), range(connections)))
    return sorted(by_worker.values(), reverse=True)


def run_spread(args) -> dict:
    results: dict = {name: [] for name in args.worker_classes}
    with ExitStack() as stack:
        servers = {name: stack.enter_context(echo_server(WORKER_CLASSES.get(name, name), args.threads,
                                                         args.spread_workers))[0]
                   for name in dict.fromkeys(args.worker_classes)}
        for number in range(args.rounds):
            for name in args.worker_classes:
                counts = spread_round(servers[name], args.spread, args.spread_requests)
                counts += [0] * (args.spread_workers - len(counts))
                results[name].append(counts)
                print(f"round {number + 1} {name}: connections per worker {counts} "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    return results


def spread_markdown(results: dict, workers: int) -> str:
    lines = ["| worker class | connections per worker, each round | rounds with a worker left idle |", "|---|---|---:|"]
    for name, rounds in results.items():
        idle = sum(1 for counts in rounds if len(counts) == workers and counts[-1] == 0)
        lines.append(f"| {name} | {' '.join(str(counts) for counts in rounds)} | {idle} of {len(rounds)} |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    keys = ("wall_p50_ms", "wall_mean_ms", "client_cpu_ms", "server_main_cpu_ms", "server_pool_cpu_ms",
            "server_main_switches", "server_pool_switches")
    lines = ["| worker class | client | gap ms | " + " | ".join(keys) + " |", "|---|---|---:|" + "---:|" * len(keys)]
    for label, blocks in results.items():
        cells = [f"{statistics.median(block[k] for block in blocks):.3f}" for k in keys]
        lines.append("| " + " | ".join(label.split(" | ")).replace("gap ", "") + " | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(medians over the rounds of each pair's per-request figures)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per pair and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap-ms", default="0,5", help="client waits between requests, comma-separated")
    parser.add_argument("--worker-classes", default="robin,linger",
                        help=f"comma-separated: {', '.join(WORKER_CLASSES)} or a dotted worker class")
    parser.add_argument("--threads", type=int, default=Settings().threads, help="threads per gunicorn worker")
    parser.add_argument("--spread", type=int, default=0, help="connections opened at once (instead of the split)")
    parser.add_argument("--spread-workers", type=int, default=4, help="gunicorn workers of the --spread servers")
    parser.add_argument("--spread-requests", type=int, default=200, help="requests per --spread connection")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.gap_ms = [float(g) for g in args.gap_ms.split(",") if g.strip()]
    args.worker_classes = [w.strip() for w in args.worker_classes.split(",") if w.strip()]
    if args.requests < 1 or args.rounds < 1 or not args.worker_classes or any(g < 0 for g in args.gap_ms):
        parser.error("--requests and --rounds must be positive, --gap-ms not negative")
    if args.spread < 0 or args.spread_workers < 1 or args.spread_requests < 1:
        parser.error("--spread cannot be negative, --spread-workers and --spread-requests must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"requests": args.requests, "rounds": args.rounds, "threads": args.threads},
              "load_1m_start": os.getloadavg()[0]}
    if args.spread:
        report["spread"] = run_spread(args)
        print("\n" + spread_markdown(report["spread"], args.spread_workers))
    else:
        report["results"] = run(args)
        print("\n" + markdown(report["results"]))
    report["load_1m_end"] = os.getloadavg()[0]
    print(f"\nload average (1 min): {report['load_1m_start']:.2f} at the start, {report['load_1m_end']:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
