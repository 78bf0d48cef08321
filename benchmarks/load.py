"""robin under concurrent load: reads and writes through two replicas on PostgreSQL, against the ceilings here.

One run starts its own dev Ceph cluster (or uses --ceph-conf) and PostgreSQL (a throwaway server on 127.0.0.1,
stopped by its pid), then these phases, in this order, each --duration seconds after an untimed --warmup:

  PostgreSQL      two `robin serve` replicas (--workers each, one database, one ROBIN_SECRET_KEY: the setup the
                  Helm chart ships) on two ports, the client's connections spread over both:
                    GET  `/api/v2/projects/{p}/rbd-images?limit=100` (100 images there) at --read-concurrency;
                    POST `/api/v2/projects/{p}/rbd-images` (1 GiB, a new name each) at --write-concurrency;
  bare app        two gunicorn servers with robin's settings (worker class, --workers, robin's threads per worker)
                  whose WSGI app returns a constant: robin's own 100-item page, as the PostgreSQL phase got it.
                  The ceiling of the server stack, and the check that the load generator is not the bottleneck;
                  then (not with --reads-only) two such servers whose every POST is one raw `RBD().create` on the
                  worker's kept cluster connection, at --write-concurrency: the writes' ceiling through the
                  server stack, robin's own work aside;
  raw             `rbd.RBD().create` (robin's default features) from --write-concurrency threads on one
                  connection: the ceiling of Ceph here;
  SQLite          one `robin serve` on a SQLite database, the same GET and POST, for comparison.

The load generator is this process: one thread per connection, each a keep-alive `http.client` connection
issuing its next request as soon as the last one is answered (closed loop). Reported per phase: requests/s
(answers with the expected status over the phase's wall time), p50/p99 latency, errors, the generator's own CPU
(in cores) and the load average. Prints Markdown, writes JSON (--json) with the machine and robin's commit.

    .venv/bin/python benchmarks/load.py [--duration 30] [--reads-only] [--shapes 4x8,8x2]
        [--worker-classes gthread,spread,gthread,spread] [--switch-intervals 5,0.5,5,0.5] [--robin-only]
        [--no-postgresql] [--json out.json]

--reads-only runs the GET phases and the bare app alone (no POST phases, no raw phase). --shapes runs the
PostgreSQL, bare app and SQLite phases once per shape, WORKERSxTHREADS of each server (default: --workers x
--threads), on the same cluster and PostgreSQL server; the raw phase runs once. After each robin phase the resident
memory (RSS) of every gunicorn worker of its servers is read from /proc and reported (mean and largest), and
each worker's requests in the PostgreSQL GET phase from the replicas' /metrics (robin_worker_requests).
--worker-classes runs those phases once per entry with robin serve's worker (robin/gunicorn_worker.py: `robin`,
the default), gunicorn's own gthread worker (`gthread`), benchmarks/linger_worker.py's (`linger`,
measured and not taken) or benchmarks/spread_worker.py's (`spread`), in the order
given: an A/B interleaved in one run. --switch-intervals does the same for robin serve's interpreter switch
interval (ROBIN_SWITCH_INTERVAL_MS, milliseconds; the bare apps keep Python's own 5 ms), --robin-only leaves
out the bare app phases, and --no-postgresql (with --robin-only) the PostgreSQL ones. Each robin phase also
reports the CPU its servers' processes (masters and workers) used per answered request: /proc's user and system
time of the replicas' process groups, before and after.

Everything it starts (cluster daemons, PostgreSQL, the servers) is stopped by pid in `finally`, Ctrl-C and
SIGTERM included. On a dev cluster it started, the volumes made are left to go with it; with --ceph-conf they are
purged (robin's with `DELETE ?purge=true`, the raw images with `RBD().remove`).
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `benchmarks`, `tests.support` and robin importable

import rbd  # noqa: E402

from benchmarks import bare_app  # noqa: E402
from benchmarks.api_vs_binding import (  # noqa: E402
    fmt,
    git_state,
    machine,
    make_admin_token,
    make_database,
    percentile,
    rados_ioctx,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from robin.config import Settings  # noqa: E402
from tests.support import server as test_server  # noqa: E402
from tests.support.net import free_port, wait_until  # noqa: E402
from tests.support.server import running_replica  # noqa: E402

GiB = 2**30
# robin serve's worker class (robin/gunicorn_conf.py), gunicorn's gthread it builds on, and two contenders, measured
# and not taken: one serving a kept-alive connection's next request on the thread that answered the last, one
# spreading connections over the workers; --worker-classes compares them (or any worker class by its dotted path).
WORKER_CLASSES = {"robin": "robin.gunicorn_worker.ThreadWorker", "gthread": "gthread",
                  "linger": "benchmarks.linger_worker.ThreadWorker",
                  "spread": "benchmarks.spread_worker.ThreadWorker"}
PAGE = 100
HTTP_TIMEOUT_S = 60
# Sixteen workers starting at once on a busy 2-core machine take longer than the tests' minute to answer.
test_server.START_TIMEOUT_S = max(test_server.START_TIMEOUT_S, 300)
GOAL_READS_PER_S = 1000.0
GOAL_P99_OVER_P50 = 5.0
GOAL_WRITES_VS_RAW = 1.5  # robin's create throughput within 1.5x of the raw binding's


# --- the load generator ---------------------------------------------------------------------------

class Target:
    """One kind of request: what to send and which status means it worked."""

    def __init__(self, method: str, path: str, token: str | None, expect: int, body=None):
        self.method, self.path, self.expect, self.body = method, path, expect, body
        self.headers = {"Connection": "keep-alive"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            self.headers["Content-Type"] = "application/json"

    def payload(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body()).encode()


def drive(urls: list[str], target: Target, concurrency: int, duration: float) -> dict:
    """`concurrency` closed-loop connections, spread over `urls`, for `duration` seconds."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    statuses: list[Counter] = [Counter() for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    deadline: list[float] = []

    def connection(worker: int) -> None:
        host = urlsplit(urls[worker % len(urls)])
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=HTTP_TIMEOUT_S)
        start.wait()
        while time.perf_counter() < deadline[0]:
            began = time.perf_counter()
            try:
                conn.request(target.method, target.path, body=target.payload(), headers=target.headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()  # reconnects on the next request
            elapsed = time.perf_counter() - began
            statuses[worker][status] += 1
            if status == target.expect:
                latencies[worker].append(elapsed)
        conn.close()

    threads = [threading.Thread(target=connection, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu_before, load_before = client_cpu_s(), os.getloadavg()[0]
    began = time.perf_counter()
    deadline.append(began + duration)
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began  # until the last request begun before the deadline was answered
    ok = [s for per in latencies for s in per]
    counted = sum(statuses, Counter())
    return {"concurrency": concurrency, "urls": len(urls), "wall_s": wall, "ok": len(ok),
            "per_s": len(ok) / wall, "statuses": {str(k): v for k, v in counted.items()},
            "errors": sum(v for k, v in counted.items() if k != target.expect),
            **latency(ok), "client_cores": (client_cpu_s() - cpu_before) / wall,
            "load_start": round(load_before, 2), "load_end": round(os.getloadavg()[0], 2)}


def latency(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None}
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase(label: str, urls: list[str], target: Target, concurrency: int, args, servers=()) -> dict:
    """One timed phase after its warm-up; with `servers` (robin's replicas), the CPU they used per answer too."""
    print(f"{time.strftime('%H:%M:%S')} {label}: {target.method} at {concurrency} for {args.duration:g} s "
          f"(load {os.getloadavg()[0]:.2f})", flush=True)
    drive(urls, target, concurrency, args.warmup)  # untimed: connections, every worker's first request
    cpu_before = servers_cpu_s(servers)
    result = drive(urls, target, concurrency, args.duration)
    if servers:
        # Requests still in flight at the deadline are answered (and counted) before drive() returns.
        result["server_cpu_ms"] = (servers_cpu_s(servers) - cpu_before) * 1000 / max(1, result["ok"])
    print(f"  {result['per_s']:.1f}/s, p50 {fmt(result['p50_ms'] or 0)} ms, p99 {fmt(result['p99_ms'] or 0)} ms, "
          + (f"server CPU {result['server_cpu_ms']:.2f} ms a request, " if servers else "")
          + f"errors {result['errors']} {result['statuses'] if result['errors'] else ''}", flush=True)
    return result


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def servers_cpu_s(servers) -> float:
    """User and system CPU seconds used so far by the live processes of the replicas' process groups (a worker
    that ended meanwhile takes its share with it; none does in a phase)."""
    total = 0
    for server in servers:
        for pid in server.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / CLOCK_TICKS


# --- the servers ------------------------------------------------------------------------------------

@contextmanager
def bare_servers(count: int, workers: int, threads: int, worker_class: str, body: bytes = b"", ceph_conf: str = "",
                 app: str = "app"):
    """`count` gunicorn servers running benchmarks/bare_app.py's `app` (the constant `body`) or `create` (on
    `ceph_conf`), with `worker_class` and robin serve's workers and threads."""
    directory = Path(tempfile.mkdtemp(prefix="robin-bench-bare-"))
    (directory / "body.json").write_bytes(body)
    env = {**os.environ, "PYTHONPATH": str(REPO), bare_app.BODY_ENV: str(directory / "body.json"),
           bare_app.CEPH_CONF_ENV: ceph_conf}
    with ExitStack() as stack:
        urls = []
        for i in range(count):
            port = free_port()
            log = stack.enter_context(open(directory / f"bare-{i}.log", "wb"))
            process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--worker-class", worker_class,
                                        "--no-control-socket", "--bind", f"127.0.0.1:{port}", "--workers",
                                        str(workers), "--threads", str(threads), f"benchmarks.bare_app:{app}"],
                                       env=env, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
            stack.callback(stop, process)
            urls.append(f"http://127.0.0.1:{port}")
            wait_until(lambda url=urls[-1], process=process: answers(url) or process.poll() is not None, 60,
                       "the bare gunicorn app")
            if process.poll() is not None:
                raise RuntimeError(f"the bare app exited: {(directory / f'bare-{i}.log').read_text()[-2000:]}")
        yield urls


def answers(url: str) -> bool:
    """Whether gunicorn listens there (any answer: the create app answers a GET with an image, 201)."""
    host = urlsplit(url)
    try:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=1)
        conn.request("GET", "/")
        return conn.getresponse().status < 500
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # its own session: it and its workers
            process.wait()


@contextmanager
def robin_replicas(count: int, database_url: str, conf: str, workers: int, threads: int, worker_class: str,
                   switch_ms: float | None = None):
    """`count` robin serve replicas on one database (running_replica gives each its own state directory and all
    the same ROBIN_SECRET_KEY, as the Helm chart's Deployment does), their gunicorn's worker class `worker_class`
    (gunicorn takes GUNICORN_CMD_ARGS over robin's config file), their switch interval `switch_ms` if given."""
    env = {"PYTHONPATH": str(REPO), "ROBIN_THREADS": str(threads),
           "GUNICORN_CMD_ARGS": f"--worker-class {worker_class}"}
    if switch_ms is not None:
        env["ROBIN_SWITCH_INTERVAL_MS"] = f"{switch_ms:g}"
    with ExitStack() as stack:
        yield [stack.enter_context(running_replica(database_url, conf, workers, env)) for _ in range(count)]


def worker_rss(replicas) -> dict:
    """The resident memory of the replicas' gunicorn workers (every process of a replica's group but its master),
    MiB: mean and largest."""
    sizes = []
    for replica in replicas:
        for pid in replica.pids() - {replica.process.pid}:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # a worker that ended meanwhile
            sizes += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")]
    return {"workers": len(sizes), "mean_mib": sum(sizes) / len(sizes) if sizes else None,
            "max_mib": max(sizes, default=None)}


@contextmanager
def postgres_database():
    from robin.db import upgrade
    from tests.support.postgres import PostgresServer

    server = PostgresServer.start()
    try:
        url = server.create_database("robin_load")
        upgrade(url)
        yield url
    finally:
        server.stop()


# --- robin's side: project, the page, the creates -------------------------------------------------

def api(url: str, method: str, path: str, token: str, body=None, expect: int = 200):
    host = urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != expect:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:500]!r}")
    return data


def create_project(url: str, token: str, name: str) -> None:
    api(url, "POST", "/api/v2/projects", token, {
        "name": name, "quota": {"max_bytes": 2**60, "max_volumes": 10**6, "max_snapshots": 0}}, 201)


def create_images(url: str, token: str, name: str, images: int) -> None:
    path = f"/api/v2/projects/{name}/rbd-images"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: api(url, "POST", path, token, {"name": f"{name}-page{i:03d}", "size_bytes": GiB}, 201),
                      range(images)))


def measure_robin(label: str, replicas: int, database_url: str, conf: str, args, run_id: str,
                  shape: tuple[int, int], worker_class: str, switch_ms: float | None, key: str) -> dict:
    token = make_admin_token(database_url, conf)
    # The purge (with --ceph-conf) runs while the replicas still run, on failure too.
    with robin_replicas(replicas, database_url, conf, *shape, worker_class_path(worker_class),
                        switch_ms) as servers, ExitStack() as purge:
        result = robin_phases(f"{label}-{key}", servers, token, args, run_id, purge if args.ceph_conf else None)
        return {**result, "memory": worker_rss(servers)}


def robin_phases(label: str, servers, token: str, args, run_id: str, purge: ExitStack | None) -> dict:
    urls = [server.url for server in servers]
    project = f"load-{run_id}-" + "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    create_project(urls[0], token, project)
    if purge is not None:
        purge.callback(purge_project, urls[0], token, project)
    create_images(urls[0], token, project, PAGE)
    page_path = f"/api/v2/projects/{project}/rbd-images?limit={PAGE}"
    page = api(urls[0], "GET", page_path, token)
    if len(json.loads(page)["items"]) != PAGE:
        raise RuntimeError(f"the page holds {len(json.loads(page)['items'])} items, not {PAGE}")
    before = [worker_requests(url, token) for url in urls]
    reads = phase(f"{label}, {len(urls)} replica(s)", urls, Target("GET", page_path, token, 200),
                  args.read_concurrency, args, servers)
    reads["per_worker"] = [requests_since(previous, worker_requests(url, token))
                           for url, previous in zip(urls, before, strict=True)]
    print(f"  requests per worker: {per_worker_text(reads['per_worker'])}", flush=True)
    tag, numbers = uuid.uuid4().hex[:4], itertools.count()  # one name per request, warm-up included
    create = Target("POST", f"/api/v2/projects/{project}/rbd-images", token, 201,
                    lambda: {"name": f"w{tag}-{next(numbers)}", "size_bytes": GiB})
    writes = None if args.reads_only else phase(f"{label}, {len(urls)} replica(s)", urls, create,
                                                 args.write_concurrency, args, servers)
    return {"replicas": len(urls), "page_bytes": len(page), "page": page, "reads": reads, "writes": writes}


def worker_requests(url: str, token: str) -> dict[str, float]:
    """Each live worker's requests answered so far, by pid: robin_worker_requests in the replica's /metrics."""
    counts = {}
    for line in api(url, "GET", "/metrics", token).decode().splitlines():
        if line.startswith("robin_worker_requests{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('pid="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


def requests_since(before: dict[str, float], after: dict[str, float]) -> list[int]:
    """Each worker's requests between two scrapes (the phase's warm-up included), most first."""
    return sorted((int(count - before.get(pid, 0)) for pid, count in after.items()), reverse=True)


def per_worker_text(replicas: list[list[int]]) -> str:
    return " ".join("[" + " / ".join(f"{n:,}" for n in counts) + "]" for counts in replicas)


def purge_project(url: str, token: str, project: str) -> None:
    """With --ceph-conf: every volume of the project deleted at once (`?purge=true`), 8 at a time."""
    names, cursor = [], None
    while True:
        query = f"?limit=1000&cursor={quote(cursor)}" if cursor else "?limit=1000"
        body = json.loads(api(url, "GET", f"/api/v2/projects/{project}/rbd-images{query}", token))
        names += [item["name"] for item in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: api(url, "DELETE", f"/api/v2/projects/{project}/rbd-images/{name}?purge=true",
                                       token, expect=204), names))


# --- Ceph's ceiling -------------------------------------------------------------------------------

def raw_creates(ioctx, concurrency: int, args, made: list[str]) -> dict:
    """`RBD().create` from `concurrency` threads on one connection, closed loop, as drive() does for HTTP. A create
    that fails is counted as an error, as a failed request is there, and the first failure is kept with when it
    came: one run's phase ended on `[errno 9] error creating image` (EBADF, from librbd) and took the run's report
    with it."""
    from robin.ceph import rbd_ops

    features = rbd_ops.feature_mask(Settings().rbd_default_features)
    tag = uuid.uuid4().hex[:6]

    def run(duration: float, prefix: str) -> dict:
        times: list[list[float]] = [[] for _ in range(concurrency)]
        errors: list[str] = []
        began = time.perf_counter()
        deadline = began + duration

        def worker(i: int) -> None:
            seq = 0
            while time.perf_counter() < deadline:
                name = f"raw-{tag}-{prefix}-{i}-{seq}"
                seq += 1
                started = time.perf_counter()
                try:
                    rbd.RBD().create(ioctx, name, GiB, old_format=False, features=features)
                except rbd.Error as exc:  # list.append is atomic: no lock between the threads
                    errors.append(f"{exc} ({type(exc).__name__}, {started - began:.1f} s into the phase, "
                                  f"after {sum(map(len, times))} creates)")
                    continue
                times[i].append(time.perf_counter() - started)
                made.append(name)

        cpu_before, load_before = client_cpu_s(), os.getloadavg()[0]
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(worker, range(concurrency)))
        wall = time.perf_counter() - began
        ok = [s for per in times for s in per]
        return {"concurrency": concurrency, "wall_s": wall, "ok": len(ok), "per_s": len(ok) / wall, **latency(ok),
                "errors": len(errors), "first_error": errors[0] if errors else None,
                "client_cores": (client_cpu_s() - cpu_before) / wall,
                "load_start": round(load_before, 2), "load_end": round(os.getloadavg()[0], 2)}

    print(f"{time.strftime('%H:%M:%S')} raw: RBD().create at {concurrency} for {args.duration:g} s "
          f"(load {os.getloadavg()[0]:.2f})", flush=True)
    run(args.warmup, "warm")
    result = run(args.duration, "t")
    print(f"  {result['per_s']:.1f}/s, p50 {fmt(result['p50_ms'] or 0)} ms, p99 {fmt(result['p99_ms'] or 0)} ms, "
          f"errors {result['errors']}" + (f", the first: {result['first_error']}" if result["errors"] else ""),
          flush=True)
    return result


def bare_creates(conf: str, shape: tuple[int, int], worker_class: str, args) -> dict:
    """`POST` at --write-concurrency to bare gunicorn apps (as many as robin's replicas, robin's workers, threads
    and worker class) each of whose requests is one raw `RBD().create`: the writes' ceiling through the server
    stack, robin's work aside."""
    with bare_servers(args.replicas, *shape, worker_class_path(worker_class), ceph_conf=conf, app="create") as urls:
        result = phase("bare app, raw create", urls, Target("POST", "/", None, 201), args.write_concurrency, args)
    return {"servers": len(urls), "writes": result}


def remove_images(ioctx, names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: rbd.RBD().remove(ioctx, name), names))


# --- reporting ------------------------------------------------------------------------------------

def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def table_row(setup: str, request: str, r: dict) -> str:
    ratio = r["p99_ms"] / r["p50_ms"] if r.get("p50_ms") else float("nan")
    return (f"| {setup} | {request} | {r['concurrency']} | {r['per_s']:.1f} | {fmt(r['p50_ms'] or 0)} "
            f"| {fmt(r['p99_ms'] or 0)} | {ratio:.1f} | {r['errors']} | {r['client_cores']:.2f} "
            f"| {r['load_start']} -> {r['load_end']} | {cpu_cell(r.get('server_cpu_ms'))} |")


def cpu_cell(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.2f}"


def memory_cell(memory: dict | None) -> str:
    if not memory or memory["mean_mib"] is None:
        return ""
    return f"{memory['mean_mib']:.0f} / {memory['max_mib']:.0f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    first = next(iter(report["shapes"].values()))
    lines = [f"{s['duration']:g} s per phase after {s['warmup']:g} s untimed; a {PAGE}-item page is "
             f"{first['page_bytes'] / 1024:.0f} KiB. Shape: gunicorn workers x threads per server (robin "
             "serve and the bare app alike); server CPU: robin's processes' CPU per answered request; worker RSS: "
             "MiB, mean / largest over the servers' workers.", "",
             "| shape | setup | request | concurrency | req/s | p50 ms | p99 ms | p99/p50 | errors | load generator "
             "CPU (cores) | load average | server CPU ms | worker RSS MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    goals = []
    for shape, p in report["shapes"].items():
        if "bare" in p:
            lines.append(f"| {shape} " + table_row(f"bare gunicorn app x{p['bare']['servers']} (constant body)",
                                                       f"`GET` {PAGE}-item page", p["bare"]["reads"]) + " |")
        if "bare_create" in p:
            lines.append(f"| {shape} " + table_row(f"bare gunicorn app x{p['bare_create']['servers']}, raw create "
                                                       "per request", "`POST` (`RBD().create`, 1 GiB)",
                                                       p["bare_create"]["writes"]) + " |")
        for key, label in (("postgresql", "PostgreSQL"), ("sqlite", "SQLite")):
            if key in p:
                setup = f"robin, {label}, {p[key]['replicas']} replica(s)"
                memory = memory_cell(p[key].get("memory"))
                lines.append(f"| {shape} " + table_row(setup, f"`GET` {PAGE}-item page", p[key]["reads"])
                             + f" {memory} |")
                if p[key]["writes"] is not None:
                    lines.append(f"| {shape} " + table_row(setup, "`POST` create (1 GiB image)", p[key]["writes"])
                                 + f" {memory} |")
                goals.append(f"{shape} " + goal(label, p[key], report["phases"].get("raw"), p.get("bare_create")))
    if "raw" in report["phases"]:
        lines.append("| " + table_row("raw bindings, one connection", "`RBD().create`", report["phases"]["raw"])
                     + " |")
    lines += ["", "Goals: " + "; ".join(goals) + "."]
    spread = [f"{shape}: {per_worker_text(p['postgresql']['reads']['per_worker'])}"
              for shape, p in report["shapes"].items() if p.get("postgresql", {}).get("reads", {}).get("per_worker")]
    if spread:
        lines += ["", "Requests per worker in the PostgreSQL `GET` phase (warm-up included; replicas apart by `;`): "
                  + "; ".join(spread) + "."]
    bare = max((p["bare"]["reads"] for p in report["shapes"].values() if "bare" in p), key=lambda r: r["per_s"],
               default=None)
    if bare is not None:
        lines += ["", f"The load generator (this process, {s['read_concurrency']} threads) drove the bare app at up "
                      f"to {bare['per_s']:.0f} req/s using {bare['client_cores']:.2f} cores: it sustains at least "
                      "that here, so it is not what limits robin's rates below it."]
    return "\n".join(lines)


def goal(label: str, measured: dict, raw: dict | None, bare_create: dict | None) -> str:
    reads, writes = measured["reads"], measured["writes"]
    tail = reads["p99_ms"] / reads["p50_ms"] if reads["p50_ms"] else float("inf")
    text = (f"{label}: reads >= {GOAL_READS_PER_S:g}/s {verdict(reads['per_s'] >= GOAL_READS_PER_S)} "
            f"({reads['per_s']:.0f}/s), p99 <= {GOAL_P99_OVER_P50:g}x p50 {verdict(tail <= GOAL_P99_OVER_P50)} "
            f"({tail:.1f}x)")
    if writes is not None and raw is not None:
        text += (f", writes within {GOAL_WRITES_VS_RAW:g}x of raw "
                 f"{verdict(writes['per_s'] * GOAL_WRITES_VS_RAW >= raw['per_s'])} "
                 f"({raw['per_s'] / writes['per_s']:.1f}x slower)" if writes["per_s"] else ", no write succeeded")
    if writes is not None and writes["per_s"] and bare_create is not None and bare_create["writes"]["per_s"]:
        text += (f", the server stack with a raw create per request "
                 f"{raw['per_s'] / bare_create['writes']['per_s']:.1f}x slower than raw" if raw else "")
        text += f" (robin {bare_create['writes']['per_s'] / writes['per_s']:.1f}x slower than it)"
    return text


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per timed phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds before each phase")
    parser.add_argument("--read-concurrency", type=int, default=16, help="connections issuing GETs")
    parser.add_argument("--write-concurrency", type=int, default=8, help="connections issuing POSTs (and raw "
                                                                         "create threads)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers per robin replica and bare app")
    parser.add_argument("--threads", type=int, default=Settings().threads, help="threads per gunicorn worker")
    parser.add_argument("--shapes", type=shapes, help="WORKERSxTHREADS,...: the robin and bare app phases once "
                                                      "per shape (default: --workers x --threads)")
    parser.add_argument("--worker-classes", type=worker_classes, default=["robin"],
                        help="robin,gthread,...: the robin and bare app phases once per entry (repeats allowed: "
                             "robin,gthread,robin,gthread interleaves an A/B), with robin serve's worker (robin), "
                             "gunicorn's gthread (gthread), benchmarks/linger_worker.py (linger) or "
                             "benchmarks/spread_worker.py (spread); default: robin")
    parser.add_argument("--switch-intervals", type=switch_intervals, default=[None],
                        help="MS,...: the robin and bare app phases once per entry (repeats allowed: 5,0.5,5,0.5 "
                             "interleaves an A/B), robin serve's ROBIN_SWITCH_INTERVAL_MS; default: robin's")
    parser.add_argument("--robin-only", action="store_true", help="no bare app phases")
    parser.add_argument("--replicas", type=int, default=2, help="robin replicas on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the one-replica SQLite comparison")
    parser.add_argument("--no-postgresql", action="store_true", help="skip the PostgreSQL replicas (with "
                                                                      "--robin-only: their page is the bare app's)")
    parser.add_argument("--reads-only", action="store_true", help="only the GET phases and the bare app: no "
                                                                   "creates, no raw binding phase")
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if min(args.read_concurrency, args.write_concurrency, args.workers, args.threads, args.replicas) < 1 \
            or args.duration <= 0 or args.warmup < 0:
        parser.error("--duration, the concurrencies, --workers, --threads and --replicas must be positive")
    if args.no_postgresql and (args.no_sqlite or not args.robin_only):
        parser.error("--no-postgresql needs --robin-only (the bare app serves the PostgreSQL phase's page) and "
                     "SQLite")
    args.shapes = args.shapes or [(args.workers, args.threads)]
    return args


def shapes(text: str) -> list[tuple[int, int]]:
    """'4x8,8x2' -> [(4, 8), (8, 2)]."""
    try:
        found = [tuple(int(n) for n in item.strip().split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        found = []
    if not found or any(len(shape) != 2 or min(shape) < 1 for shape in found):
        raise argparse.ArgumentTypeError(f"{text!r}: give WORKERSxTHREADS, comma-separated, e.g. 4x8,8x2")
    return found


def worker_classes(text: str) -> list[str]:
    """'gthread,robin' -> ['gthread', 'robin']."""
    found = [item.strip() for item in text.split(",") if item.strip()]
    if not found or any(item not in WORKER_CLASSES and "." not in item for item in found):
        raise argparse.ArgumentTypeError(f"{text!r}: give {' or '.join(WORKER_CLASSES)} (or a worker class's dotted "
                                         "path), comma-separated")
    return found


def switch_intervals(text: str) -> list[float]:
    """'5,0.5' -> [5.0, 0.5] (milliseconds)."""
    try:
        found = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        found = []
    if not found or any(not 0 < ms <= 1000 for ms in found):
        raise argparse.ArgumentTypeError(f"{text!r}: give milliseconds above 0, at most 1000, comma-separated")
    return found


def worker_class_path(name: str) -> str:
    return WORKER_CLASSES.get(name, name)


def runs(args) -> list[tuple[str, tuple[int, int], str, float | None]]:
    """(report key, shape, worker class, switch interval) for every shape, switch interval and worker class, in
    order; the key names the shape, and the worker class, the switch interval and the round when there are several
    or one repeats."""
    planned = [(shape, worker_class, switch_ms) for shape in args.shapes for switch_ms in args.switch_intervals
               for worker_class in args.worker_classes]
    several = len(args.worker_classes) * len(args.switch_intervals) > 1 or len(set(planned)) < len(planned)
    rounds: Counter = Counter()
    found = []
    for shape, worker_class, switch_ms in planned:
        key = f"{shape[0]}x{shape[1]}"
        if several:
            rounds[(shape, worker_class, switch_ms)] += 1
            key += f" {worker_class}" + ("" if switch_ms is None else f" {switch_ms:g} ms")
            key += f" #{rounds[(shape, worker_class, switch_ms)]}"
        found.append((key, shape, worker_class, switch_ms))
    return found


def run(args, report: dict, stack: ExitStack) -> None:
    run_id = uuid.uuid4().hex[:6]
    conf = start_cluster(stack, args.ceph_conf)
    ioctx = stack.enter_context(rados_ioctx(conf))
    made: list[str] = []
    if args.ceph_conf:
        stack.callback(remove_images, ioctx, made)
        stack.callback(remove_bare_images, ioctx)
    database_url = None if args.no_postgresql else stack.enter_context(postgres_database())
    planned = runs(args)
    for number, (key, shape, worker_class, switch_ms) in enumerate(planned):
        if number == 1 and not args.reads_only:
            report["phases"]["raw"] = raw_creates(ioctx, args.write_concurrency, args, made)
        # Filled phase by phase: the phases measured are reported even when a later one fails.
        measure_shape(report["shapes"].setdefault(key, {}), key, shape, worker_class, switch_ms, database_url, conf,
                      args, run_id, stack)
    if len(planned) == 1 and not args.reads_only:
        report["phases"]["raw"] = raw_creates(ioctx, args.write_concurrency, args, made)


def remove_bare_images(ioctx) -> None:
    remove_images(ioctx, [name for name in rbd.RBD().list(ioctx) if name.startswith(bare_app.IMAGE_PREFIX)])


def measure_shape(phases: dict, key: str, shape: tuple[int, int], worker_class: str, switch_ms: float | None,
                  database_url: str, conf: str, args, run_id: str, stack: ExitStack) -> None:
    """Into `phases`: PostgreSQL's replicas, the bare apps (unless --robin-only) and SQLite's one replica, each
    server `shape` workers x threads of `worker_class`, robin's with the switch interval `switch_ms` (None:
    robin's default)."""
    print(f"{time.strftime('%H:%M:%S')} {key}: {shape[0]} workers x {shape[1]} threads, {worker_class} worker, "
          f"switch interval {'default' if switch_ms is None else f'{switch_ms:g} ms'}", flush=True)
    robin = {"shape": shape, "worker_class": worker_class, "switch_ms": switch_ms, "key": key}
    if not args.no_postgresql:
        phases["postgresql"] = measure_robin("PostgreSQL", args.replicas, database_url, conf, args, run_id, **robin)
        page = phases["postgresql"].pop("page")  # robin's own 100-item page: the bare app's constant body
        phases["page_bytes"] = len(page)
    if not args.robin_only:
        with bare_servers(args.replicas, *shape, worker_class_path(worker_class), body=page) as urls:
            phases["bare"] = {"servers": len(urls),
                              "reads": phase("bare app", urls, Target("GET", "/", None, 200), args.read_concurrency,
                                             args)}
        if not args.reads_only:
            phases["bare_create"] = bare_creates(conf, shape, worker_class, args)
    if not args.no_sqlite:
        phases["sqlite"] = measure_robin("SQLite", 1, make_database(stack), conf, args, run_id, **robin)
        phases["page_bytes"] = len(phases["sqlite"].pop("page"))


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not take the index lock from others committing
    stop_cleanly_on_signals()
    report = {"machine": {**machine(), "load_average_start": os.getloadavg()},
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"duration": args.duration, "warmup": args.warmup,
                           "shapes": [f"{w}x{t}" for w, t in args.shapes], "replicas": args.replicas,
                           "read_concurrency": args.read_concurrency, "write_concurrency": args.write_concurrency,
                           "client": "one thread per keep-alive http.client connection, closed loop"},
              "shapes": {}, "phases": {}}
    try:
        with ExitStack() as stack:
            run(args, report, stack)
    finally:
        report["at_end"] = {**git_state(), "load_average_end": os.getloadavg()}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
            print(f"\nwrote {args.json}")
    print("\n" + markdown(report), flush=True)
    if report["machine"]["robin_source"] != report["at_end"]["robin_source"]:
        print("\nWARNING: robin's source changed during the run: the servers may have run different code",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
