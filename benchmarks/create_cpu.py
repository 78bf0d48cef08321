"""robin serve's CPU per RBD create as concurrency grows, split by thread, against the raw bindings' at the same
concurrency; Ceph client options compared interleaved.

One run starts its own dev Ceph cluster (everything made on it goes with it) and, per round, for each variant of
Ceph client options (--variants, in the order given, repeats allowed: an A/B interleaved), for each server shape
(--shapes, workers x threads):

  robin     one `robin serve` on a fresh SQLite database (or, with --postgresql, --replicas replicas on one
            throwaway PostgreSQL server), creates (`POST`, 1 GiB, a new name each) from closed-loop keep-alive
            connections at each --concurrencies, --duration seconds after an untimed --warmup;
  raw       `rbd.RBD().create` from as many threads of this process on one connection of the variant's options,
            the same concurrencies: the ceiling, librbd's and librados' own CPU per create.

Per phase: creates/s, p50, and the CPU per create of the server's processes (every thread of the master and its
workers, user and system apart, from /proc before and after) or of this process (raw), its context switches, and
that CPU by thread name (`comm`: librados names its threads msgr-worker-N, io_context_pool, log, service,
ceph_timer...; Python's threads keep the process's name). With --perf DIR, `perf record -g` samples the servers'
processes (or this one) during each phase at the largest concurrency, into DIR/<variant>-<shape>-<round>.data, for
`perf report --sort dso` and the like.

Variants (VARIANTS): `ceph`, the cluster's ceph.conf as it is (Ceph's client defaults); `quiet`, the client's log
levels at 0/0 (DEBUG_LEVELS: Ceph gathers entries up to the second level in memory on every call, for a crash
dump); `optthreads1`, one messenger thread (ms_async_op_threads = 1); these in a [client] section of a copy of the
ceph.conf, which robin serve and the raw handle read alike. `arena2`: robin serve with MALLOC_ARENA_MAX=2 (the raw
phase as `ceph`).

    .venv/bin/python benchmarks/create_cpu.py [--variants ceph,quiet,ceph,quiet] [--concurrencies 1,2,4,8]
        [--shapes 1x4,4x4] [--duration 10] [--postgresql] [--no-raw] [--perf /tmp/perf] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import signal
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `benchmarks`, `tests.support` and robin importable

import rbd  # noqa: E402

from benchmarks.api_vs_binding import (  # noqa: E402
    git_state,
    machine,
    make_admin_token,
    make_database,
    rados_ioctx,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from benchmarks.load import GiB, Target, create_project, drive, latency, postgres_database  # noqa: E402
from robin.ceph import rbd_ops  # noqa: E402
from robin.config import Settings  # noqa: E402
from tests.support import server as test_server  # noqa: E402
from tests.support.server import running_replica  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
test_server.START_TIMEOUT_S = max(test_server.START_TIMEOUT_S, 300)
# Ceph 16's client log levels above 0/0 ("<written>/<gathered in memory>"): `quiet` sets them to 0/0.
DEBUG_LEVELS = {"debug_rbd": "0/5", "debug_rados": "0/5", "debug_monc": "0/10", "debug_objecter": "0/1",
                "debug_auth": "1/5", "debug_client": "0/5", "debug_objectcacher": "0/5", "debug_mgrc": "1/5",
                "debug_finisher": "1/1", "debug_context": "0/1", "debug_throttle": "1/1", "debug_crypto": "1/5",
                "debug_buffer": "0/1", "debug_timer": "0/1", "debug_perfcounter": "1/5", "debug_asok": "1/5",
                "debug_none": "0/5"}
# name -> (robin serve's extra environment, lines for a [client] section added to a copy of the ceph.conf, which
# robin serve and the raw handle both read)
VARIANTS = {
    "ceph": ({}, []),
    "quiet": ({}, [f"{option} = 0/0" for option in DEBUG_LEVELS]),
    "optthreads1": ({}, ["ms_async_op_threads = 1"]),
    "arena2": ({"MALLOC_ARENA_MAX": "2"}, []),
}


# --- CPU from /proc -------------------------------------------------------------------------------

def thread_ticks(pids) -> dict[tuple[int, int], tuple[str, int, int, int, int]]:
    """(pid, tid) -> (thread name, user ticks, system ticks, voluntary and involuntary context switches) for every
    live thread of `pids`."""
    found = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            switches = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
                        if line.endswith(tuple("0123456789")) and "ctxt_switches" in line}
            found[(pid, int(tid))] = (name, int(fields[11]), int(fields[12]), switches["voluntary_ctxt_switches"],
                                      switches["nonvoluntary_ctxt_switches"])
    return found


def cpu_between(before: dict, after: dict, new_threads: bool = True) -> dict:
    """User and system CPU seconds between two thread_ticks, in all and by thread name (a thread that ended
    meanwhile takes its share with it: robin's lane threads and librados' live as long as their process); threads
    born in between count from zero, unless not `new_threads`."""
    by_name: Counter = Counter()
    user = system = voluntary = involuntary = 0
    for key, (name, utime, stime, vol, invol) in after.items():
        if key not in before and not new_threads:
            continue
        _, u0, s0, v0, i0 = before.get(key, (name, 0, 0, 0, 0))
        user, system = user + utime - u0, system + stime - s0
        voluntary, involuntary = voluntary + vol - v0, involuntary + invol - i0
        by_name[thread_group(name)] += utime - u0 + stime - s0
    return {"user_s": user / CLOCK_TICKS, "system_s": system / CLOCK_TICKS, "voluntary_switches": voluntary,
            "involuntary_switches": involuntary,
            "by_thread_s": {name: ticks / CLOCK_TICKS for name, ticks in by_name.most_common()}}


def thread_group(name: str) -> str:
    """msgr-worker-0 and msgr-worker-1 -> msgr-worker-*; Python's threads (the process's own name) -> python."""
    if name.startswith(("gunicorn", "python", "robin")):
        return "python (request, lane, main)"
    return name.rstrip("0123456789") + "*" if name[-1:].isdigit() else name


# --- the phases -----------------------------------------------------------------------------------

@contextmanager
def perf_record(pids, path: Path | None):
    """`perf record -g` on `pids` for the block's duration, when asked for."""
    if path is None:
        yield
        return
    process = subprocess.Popen(["perf", "record", "-g", "-F", "499", "-o", str(path), "-p",
                                ",".join(str(pid) for pid in pids)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def robin_phase(urls: list[str], pids, target: Target, concurrency: int, args, perf: Path | None) -> dict:
    drive(urls, target, concurrency, args.warmup)
    with perf_record(pids, perf):
        before = thread_ticks(pids)
        result = drive(urls, target, concurrency, args.duration)
        result["cpu"] = cpu_between(before, thread_ticks(pids))
    return result


def raw_phase(ioctx, concurrency: int, args, perf: Path | None) -> dict:
    features = rbd_ops.feature_mask(Settings().rbd_default_features)
    tag = uuid.uuid4().hex[:6]

    def run(duration: float, prefix: str) -> tuple[list[float], list[resource.struct_rusage]]:
        times: list[list[float]] = [[] for _ in range(concurrency)]
        deadline = time.perf_counter() + duration

        def worker(i: int) -> resource.struct_rusage:
            seq = 0
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                rbd.RBD().create(ioctx, f"cpu-{tag}-{prefix}-{i}-{seq}", GiB, old_format=False, features=features)
                times[i].append(time.perf_counter() - began)
                seq += 1
            return resource.getrusage(resource.RUSAGE_THREAD)  # the thread's whole life: it is new

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            usages = list(pool.map(worker, range(concurrency)))
        return [s for per in times for s in per], usages

    run(args.warmup, "warm")
    with perf_record([os.getpid()], perf):
        before, began = thread_ticks([os.getpid()]), time.perf_counter()
        ok, usages = run(args.duration, "t")
        wall = time.perf_counter() - began
        # The calling threads count by their own usage: one joined may still be listed in /proc, exiting.
        cpu = with_callers(cpu_between(before, thread_ticks([os.getpid()]), new_threads=False), usages)
    return {"concurrency": concurrency, "wall_s": wall, "ok": len(ok), "per_s": len(ok) / wall, **latency(ok),
            "errors": 0, "cpu": cpu, "load_end": round(os.getloadavg()[0], 2)}


def with_callers(cpu: dict, usages: list[resource.struct_rusage]) -> dict:
    """`cpu` with the CPU of the threads that called the binding, which ended before /proc was read again."""
    user, system = sum(u.ru_utime for u in usages), sum(u.ru_stime for u in usages)
    by_thread = {"python (the calling threads)": user + system, **cpu["by_thread_s"]}
    return {**cpu, "user_s": cpu["user_s"] + user, "system_s": cpu["system_s"] + system,
            "voluntary_switches": cpu["voluntary_switches"] + sum(u.ru_nvcsw for u in usages),
            "involuntary_switches": cpu["involuntary_switches"] + sum(u.ru_nivcsw for u in usages),
            "by_thread_s": dict(sorted(by_thread.items(), key=lambda item: -item[1]))}


def report_phase(label: str, result: dict) -> None:
    cpu, ok = result["cpu"], max(1, result["ok"])
    total = (cpu["user_s"] + cpu["system_s"]) * 1000 / ok
    result["cpu_ms"] = total
    result["user_ms"], result["system_ms"] = cpu["user_s"] * 1000 / ok, cpu["system_s"] * 1000 / ok
    result["switches"] = (cpu["voluntary_switches"] / ok, cpu["involuntary_switches"] / ok)
    top = ", ".join(f"{name} {seconds * 1000 / ok:.2f}" for name, seconds in list(cpu["by_thread_s"].items())[:6])
    print(f"  {label} c{result['concurrency']}: {result['per_s']:.1f}/s, p50 {result['p50_ms'] or 0:.1f} ms, "
          f"CPU {total:.2f} ms a create (user {result['user_ms']:.2f}, system {result['system_ms']:.2f}; {top}), "
          f"context switches a create {result['switches'][0]:.1f} voluntary, {result['switches'][1]:.1f} not, "
          f"errors {result['errors']}, load {os.getloadavg()[0]:.1f}", flush=True)


# --- the servers ----------------------------------------------------------------------------------

def variant_conf(conf: str, lines: list[str], directory: Path, name: str) -> str:
    """The cluster's ceph.conf, with `lines` in a [client] section of its own (the file has none)."""
    if not lines:
        return conf
    path = directory / f"{name}.conf"
    path.write_text(Path(conf).read_text() + "\n[client]\n" + "".join(f"{line}\n" for line in lines))
    return str(path)


def creates(project: str, token: str) -> Target:
    """A 1 GiB create with a new name each time."""
    tag, numbers = uuid.uuid4().hex[:4], itertools.count()
    return Target("POST", f"/api/v2/projects/{project}/rbd-images", token, 201,
                  lambda: {"name": f"c{tag}-{next(numbers)}", "size_bytes": GiB})


def measure_robin(report: dict, number: int, variant: str, shape: tuple[int, int], conf: str, args,
                  stack: ExitStack, postgresql_url: str | None) -> None:
    workers, threads = shape
    database = postgresql_url or make_database(stack)
    token = make_admin_token(database, conf)
    env = {"PYTHONPATH": str(REPO), "ROBIN_THREADS": str(threads), **VARIANTS[variant][0]}
    with ExitStack() as servers:
        started = [servers.enter_context(running_replica(database, conf, workers, env))
                   for _ in range(args.replicas if postgresql_url else 1)]
        urls = [replica.url for replica in started]
        pids = set().union(*(replica.pids() for replica in started))
        project = f"cpu-{uuid.uuid4().hex[:8]}"
        create_project(urls[0], token, project)
        target = creates(project, token)
        for concurrency in args.concurrencies:
            perf = perf_path(args, concurrency, f"{variant}-{workers}x{threads}-{number}")
            result = robin_phase(urls, pids, target, concurrency, args, perf)
            report_phase("robin", result)
            report["phases"].append({"round": number, "variant": variant, "shape": f"{workers}x{threads}",
                                     "setup": "robin", **result})


def measure_raw(report: dict, number: int, variant: str, conf: str, args) -> None:
    with rados_ioctx(conf) as ioctx:
        for concurrency in args.concurrencies:
            result = raw_phase(ioctx, concurrency, args, perf_path(args, concurrency, f"{variant}-raw-{number}"))
            report_phase("raw", result)
            report["phases"].append({"round": number, "variant": variant, "shape": "", "setup": "raw", **result})


def perf_path(args, concurrency: int, name: str) -> Path | None:
    return args.perf / f"{name}.data" if args.perf and concurrency == max(args.concurrencies) else None


def measure_round(report: dict, number: int, variant: str, conf: str, args, stack: ExitStack,
                  postgresql_url: str | None) -> None:
    directory = tempfile.mkdtemp(prefix="robin-bench-cpu-")
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    conf = variant_conf(conf, VARIANTS[variant][1], Path(directory), variant)
    for shape in args.shapes:
        print(f"{time.strftime('%H:%M:%S')} {variant} {shape[0]}x{shape[1]} #{number}", flush=True)
        measure_robin(report, number, variant, shape, conf, args, stack, postgresql_url)
    if not args.no_raw:
        measure_raw(report, number, variant, conf, args)


# --- report ---------------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    lines = ["| round | variant | setup | shape | concurrency | creates/s | p50 ms | CPU ms a create | user / system "
             "| context switches a create, voluntary / not | by thread, ms a create | load |",
             "|---|---|---|---|---:|---:|---:|---:|---|---|---|---:|"]
    for p in report["phases"]:
        ok = max(1, p["ok"])
        threads = ", ".join(f"{name} {seconds * 1000 / ok:.2f}" for name, seconds in
                            list(p["cpu"]["by_thread_s"].items())[:5])
        lines.append(f"| {p['round']} | {p['variant']} | {p['setup']} | {p['shape']} | {p['concurrency']} | "
                     f"{p['per_s']:.1f} | {p['p50_ms'] or 0:.1f} | {p['cpu_ms']:.2f} | {p['user_ms']:.2f} / "
                     f"{p['system_ms']:.2f} | {p['switches'][0]:.1f} / {p['switches'][1]:.1f} | {threads} | "
                     f"{p['load_end']} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=lambda text: text.split(","), default=["ceph", "quiet"],
                        help=f"comma-separated, repeats allowed, of {', '.join(VARIANTS)}")
    parser.add_argument("--concurrencies", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--shapes", type=lambda text: [tuple(int(n) for n in s.split("x")) for s in text.split(",")],
                        default=[(1, Settings().threads), (4, Settings().threads)], help="WORKERSxTHREADS,...")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--postgresql", action="store_true", help="--replicas replicas on PostgreSQL, not SQLite")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--no-raw", action="store_true", help="no raw bindings phases")
    parser.add_argument("--perf", type=Path, help="perf record the phases at the largest concurrency into here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or min(args.concurrencies) < 1 or any(min(shape) < 1 for shape in args.shapes):
        parser.error(f"variants are {', '.join(VARIANTS)}; concurrencies and shapes positive")
    if args.perf and not shutil.which("perf"):
        parser.error("--perf needs perf on the PATH")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    if args.perf:
        args.perf.mkdir(parents=True, exist_ok=True)
    report = {"machine": {**machine(), "load_average_start": os.getloadavg()},
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "phases": []}
    rounds: Counter = Counter()
    try:
        with ExitStack() as stack:
            conf = start_cluster(stack, None)
            postgresql_url = stack.enter_context(postgres_database()) if args.postgresql else None
            for variant in args.variants:
                rounds[variant] += 1
                measure_round(report, rounds[variant], variant, conf, args, stack, postgresql_url)
    finally:
        report["at_end"] = {**git_state(), "load_average_end": os.getloadavg()}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print("\n" + markdown(report), flush=True)
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda hook: print(f"thread {hook.thread}: {hook.exc_value!r}", file=sys.stderr)
    run_main(main)
