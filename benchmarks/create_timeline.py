"""One RBD create over HTTP, one at a time, split into where its wall time goes: the client, gunicorn, Flask, robin's
two transactions, the lane's hand-overs, the image's create and its owner mark; next to the raw create and the raw
create with the owner mark's omap write, measured interleaved by this process.

One run starts its own dev Ceph cluster (everything made on it goes with it) and one `robin serve` (--workers, on a
fresh SQLite database, or with --postgresql on a throwaway PostgreSQL server) whose interpreter runs
benchmarks/timeline_hooks.py: a `sitecustomize.py` this script writes is first on the server's PYTHONPATH. robin's
own code is not changed; the stamps live only in that server. Then, --iterations times after --warmup untimed ones,
in a rotated order:

  api        `POST .../rbd-images` (1 GiB, a new name) on a keep-alive `requests.Session`, as
             benchmarks/api_vs_binding.py's api path, stamped by the client before the send and after the answer;
  raw        `rbd.RBD().create` of the same size and features on this process's own connection;
  raw+mark   the same create, then the owner mark robin writes after it (rbd_ops._set_owner: one omap write).

Every stamp is perf_counter (CLOCK_MONOTONIC: one clock for the client and the server) with the stamping thread's
CPU time. Per segment (consecutive stamps), the median and mean wall time, and the median CPU when both stamps are
on one thread. The segments add up to the request's wall time; the API's added time is its median less the raw
create's, robin's share of it is what is not the image's own create inside the server.

    .venv/bin/python benchmarks/create_timeline.py [--iterations 300] [--warmup 20] [--workers 4]
        [--postgresql] [--json out.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `benchmarks`, `tests.support` and robin importable

import rbd  # noqa: E402

from benchmarks import timeline_hooks  # noqa: E402
from benchmarks.api_vs_binding import (  # noqa: E402
    HTTP_TIMEOUT_S,
    create_project,
    machine,
    make_admin_token,
    make_database,
    new_session,
    rados_ioctx,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from benchmarks.load import GiB, postgres_database  # noqa: E402
from robin.ceph import rbd_ops  # noqa: E402
from robin.config import Settings  # noqa: E402
from tests.support import server as test_server  # noqa: E402
from tests.support.server import running_replica  # noqa: E402

test_server.START_TIMEOUT_S = max(test_server.START_TIMEOUT_S, 300)
THIS, BEFORE = "this", "before"  # the servers: this checkout's, and --before's
SITECUSTOMIZE = "from benchmarks import timeline_hooks\ntimeline_hooks.install()\n"
# The stamps in the order a create passes them: (stamp, what the time from the previous stamp to it is).
SEGMENTS = (
    ("sent", ""),
    ("enqueued", "the client sends; the kernel; gunicorn's poller sees the request and queues the connection"),
    ("picked", "a request thread takes the connection"),
    ("parsed", "gunicorn reads and parses the request"),
    ("app_in", "gunicorn builds the WSGI environ"),
    ("before_in", "Flask: the request context"),
    ("auth_in", "before_request hooks before authentication (request id, body checks)"),
    ("auth_out", "authenticate the token"),
    ("before_out", "the other before_request hooks"),
    ("create_in", "Flask and smorest: the view, the body's schema"),
    ("reserve_in", "require_write, placement"),
    ("reserve_out", "the first transaction: quota locked and reserved, row inserted, committed"),
    ("call_in", "the cluster's connection looked up"),
    ("lane_in", "the hand-over to the pool's lane thread (handle checked out)"),
    ("make_in", "the pool's ioctx"),
    ("make_out", "RBD().create"),
    ("owner_in", ""),
    ("owner_out", "the owner mark (one omap write to robin's directory object)"),
    ("lane_out", "metadata (none asked)"),
    ("call_out", "the hand-back to the request thread"),
    ("set_state_in", "crash point, audit"),
    ("set_state_out", "the second commit (compare-and-set and the audit row's status)"),
    ("create_out", ""),
    ("after_in", "the answer serialized (smorest), Flask's response"),
    ("after_out", "after_request hooks (metrics, access log, audit)"),
    ("teardown_in", ""),
    ("teardown_out", "Flask's teardown"),
    ("app_out", "the request context popped"),
    ("written", "gunicorn writes the answer"),
    ("received", "the kernel; the client reads and parses the answer"),
)


def median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 3) if values else None


def mean_ms(values: list[float]) -> float | None:
    return round(statistics.fmean(values) * 1000, 3) if values else None


def run(args, stack: ExitStack) -> dict:
    conf = start_cluster(stack, None)
    database = stack.enter_context(postgres_database()) if args.postgresql else make_database(stack)
    token = make_admin_token(database, conf)
    hooks_dir = Path(tempfile.mkdtemp(prefix="robin-timeline-"))
    (hooks_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    checkouts = {THIS: REPO, **({BEFORE: args.before.resolve()} if args.before else {})}
    urls = {}
    for label, checkout in checkouts.items():
        (hooks_dir / label).mkdir()
        # The checkout's robin first; benchmarks.timeline_hooks from this one (a namespace package spans both).
        env = {"PYTHONPATH": f"{hooks_dir}:{checkout}:{REPO}", timeline_hooks.ENV: str(hooks_dir / label)}
        replica = stack.enter_context(running_replica(database, conf, args.workers, env, cwd=str(checkout)))
        project = f"tl-{label}-{uuid.uuid4().hex[:8]}"
        create_project(replica.url, token, project)
        urls[label] = f"{replica.url}/api/v2/projects/{project}/rbd-images"
    sessions = {label: new_session(token) for label in checkouts}
    ioctx = stack.enter_context(rados_ioctx(conf))
    features = rbd_ops.feature_mask(Settings().rbd_default_features)
    tag = uuid.uuid4().hex[:6]
    client: dict[str, dict] = {}
    raw: dict[float, dict[str, list[float]]] = {gap: {"raw": [], "raw+mark": [], "mark": []} for gap in args.gaps_ms}

    def api(label: str, i: int, timed: bool) -> None:
        gap, seq = args.gaps_ms[i % len(args.gaps_ms)], f"{label}:{i}"
        sent = time.perf_counter()
        response = sessions[label].post(urls[label], json={"name": f"a{tag}-{label}-{i}", "size_bytes": GiB},
                                        headers={"X-Bench-Seq": seq}, timeout=HTTP_TIMEOUT_S)
        received = time.perf_counter()
        if response.status_code != 201:
            raise RuntimeError(f"create: {response.status_code} {response.text[:300]}")
        if timed:
            client[seq] = {"sent": sent, "received": received, "gap_ms": gap, "server": label}

    def raw_create(i: int, timed: bool, mark: bool) -> None:
        samples = raw[args.gaps_ms[i % len(args.gaps_ms)]]
        name = f"r{tag}-{'m' if mark else 'p'}{i}"
        began = time.perf_counter()
        rbd.RBD().create(ioctx, name, GiB, old_format=False, features=features)
        created = time.perf_counter()
        if mark:
            rbd_ops._set_owner(ioctx, name, str(uuid.uuid4()))
        ended = time.perf_counter()
        if timed and mark:
            samples["raw+mark"].append(ended - began)
            samples["mark"].append(ended - created)
        elif timed:
            samples["raw"].append(ended - began)

    paths = [functools.partial(api, label) for label in checkouts]
    paths += [lambda i, t: raw_create(i, t, False), lambda i, t: raw_create(i, t, True)]
    for i in range(args.warmup + args.iterations):
        timed = i >= args.warmup
        for k in range(len(paths)):  # a rotation: each path in each place as often
            time.sleep(args.gaps_ms[i % len(args.gaps_ms)] / 1000)
            paths[(i + k) % len(paths)](i, timed)
    server = {}
    for label in checkouts:
        server |= read_stamps(hooks_dir / label)
    return {"load_average_end": os.getloadavg(), "client": client, "raw": raw, "server": server,
            "servers": list(checkouts)}


def read_stamps(directory: Path) -> dict[str, dict]:
    found = {}
    for path in directory.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            found[record["seq"]] = record
    return found


def timeline(result: dict, server: str, gap_ms: float) -> dict:
    """Per segment: wall times (and CPU, when both stamps are on one thread) over the requests to `server` sent after
    a gap of `gap_ms` that have every stamp."""
    names = [name for name, _ in SEGMENTS]
    requests, sql = [], {"reserve": [], "set_state": []}
    for seq, client in result["client"].items():
        if client["gap_ms"] != gap_ms or client["server"] != server:
            continue
        record = result["server"].get(seq, {"stamps": {}, "sql": []})
        stamps = {name: (client[name], None) for name in CLIENT_STAMPS} | {
            name: tuple(v) for name, v in record["stamps"].items()}
        if all(name in stamps for name in names):
            requests.append(stamps)
            for transaction in sql:
                sql[transaction].append(driver_time(record["sql"], stamps, transaction))
    rows = []
    for (before, _), (name, what) in zip(SEGMENTS, SEGMENTS[1:], strict=False):
        walls = [r[name][0] - r[before][0] for r in requests]
        cpus = [r[name][1] - r[before][1] for r in requests
                if r[name][1] is not None and r[before][1] is not None and same_thread(before, name)]
        rows.append({"from": before, "to": name, "what": what, "wall_median_ms": median_ms(walls),
                     "wall_mean_ms": mean_ms(walls), "cpu_median_ms": median_ms(cpus)})
    transactions = {
        # No statements when the transaction ran on the driver's connection (db.Direct): SQLAlchemy's events miss it.
        transaction: {"statements": statistics.median(len(t["statements"]) for t in times) if times else 0,
                      "driver_execute_median_ms": median_ms([sum(t["statements"]) for t in times]),
                      "commit_median_ms": median_ms([t["commit"] for t in times if t["commit"] is not None])}
        for transaction, times in sql.items()}
    totals = [r["received"][0] - r["sent"][0] for r in requests]
    inside = [r["make_out"][0] - r["make_in"][0] for r in requests]
    raw = result["raw"][gap_ms]
    return {"server": server, "gap_ms": gap_ms, "requests": len(requests), "segments": rows,
            "transactions": transactions,
            "api_median_ms": median_ms(totals), "api_mean_ms": mean_ms(totals),
            "segments_median_sum_ms": round(sum(r["wall_median_ms"] for r in rows), 3),
            "create_in_server_median_ms": median_ms(inside),
            "raw_median_ms": median_ms(raw["raw"]), "raw_mean_ms": mean_ms(raw["raw"]),
            "raw_mark_median_ms": median_ms(raw["raw+mark"]), "mark_median_ms": median_ms(raw["mark"]),
            "api_added_median_ms": round(median_ms(totals) - median_ms(raw["raw"]), 3)}


def driver_time(statements: list, stamps: dict, transaction: str) -> dict:
    """The statements the driver ran inside one of the two transactions (their execute's wall time each), and its
    commit's: from SQLAlchemy's commit event, just before the driver's commit, to the transaction's end."""
    began, ended = stamps[f"{transaction}_in"][0], stamps[f"{transaction}_out"][0]
    inside = [s for s in statements if began <= s[1] <= ended]
    commits = [s[1] for s in inside if s[0] == "COMMIT"]
    return {"statements": [s[2] - s[1] for s in inside if s[0] != "COMMIT" and s[2] is not None],
            "commit": ended - commits[-1] if commits else None}


LANE_STAMPS = {"lane_in", "make_in", "make_out", "owner_in", "owner_out", "lane_out"}
CLIENT_STAMPS = {"sent", "received"}


def before_minus_this(result: dict) -> dict:
    """Per gap: the median of the per-iteration differences, the --before server's request minus this one's (the two
    ran within one rotation), overall and for the two transactions."""
    found = {}
    for gap in dict.fromkeys(c["gap_ms"] for c in result["client"].values()):
        pairs = [(seq.split(":", 1)[1], c) for seq, c in result["client"].items()
                 if c["gap_ms"] == gap and c["server"] == THIS]
        differences: dict[str, list[float]] = {"request": [], "reserve": [], "set_state": []}
        for i, this in pairs:
            before = result["client"].get(f"{BEFORE}:{i}")
            if before is None:
                continue
            differences["request"].append((before["received"] - before["sent"]) - (this["received"] - this["sent"]))
            for transaction in ("reserve", "set_state"):
                spans = [_span(result["server"].get(f"{label}:{i}"), transaction) for label in (BEFORE, THIS)]
                if None not in spans:
                    differences[transaction].append(spans[0] - spans[1])
        found[str(gap)] = {key: median_ms(values) for key, values in differences.items()} | {
            "iterations": len(differences["request"])}
    return found


def _span(record: dict | None, transaction: str) -> float | None:
    stamps = (record or {}).get("stamps", {})
    if f"{transaction}_in" not in stamps or f"{transaction}_out" not in stamps:
        return None
    return stamps[f"{transaction}_out"][0] - stamps[f"{transaction}_in"][0]


def same_thread(a: str, b: str) -> bool:
    if {a, b} & CLIENT_STAMPS or "enqueued" in (a, b):
        return False
    return (a in LANE_STAMPS) == (b in LANE_STAMPS)


def markdown(summary: dict) -> str:
    lines = ["| segment (to the stamp) | what | wall median ms | wall mean ms | CPU median ms (one thread) |",
             "|---|---|---:|---:|---:|"]
    for row in summary["segments"]:
        cpu = "" if row["cpu_median_ms"] is None else f"{row['cpu_median_ms']:.3f}"
        lines.append(f"| {row['from']} -> {row['to']} | {row['what']} | {row['wall_median_ms']:.3f} | "
                     f"{row['wall_mean_ms']:.3f} | {cpu} |")
    lines += ["", f"server {summary['server']}, gap before each request {summary['gap_ms']} ms; "
              f"requests with every stamp: {summary['requests']}; "
              f"API median {summary['api_median_ms']} ms "
              f"(mean {summary['api_mean_ms']}), the segments' medians add up to {summary['segments_median_sum_ms']};"
              f" RBD().create inside the server {summary['create_in_server_median_ms']}; raw create "
              f"{summary['raw_median_ms']} (mean {summary['raw_mean_ms']}), raw create + mark "
              f"{summary['raw_mark_median_ms']} (the mark alone {summary['mark_median_ms']}); "
              f"the API adds {summary['api_added_median_ms']} ms at the median", ""]
    for transaction, times in summary["transactions"].items():
        if not times["statements"]:
            lines.append(f"{transaction}: run on the driver's connection, unseen by SQLAlchemy's events")
            continue
        lines.append(f"{transaction}: {times['statements']} statements, the driver's execute "
                     f"{times['driver_execute_median_ms']} ms, from the commit event to the end "
                     f"{times['commit_median_ms']} ms (medians)")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--gaps-ms", type=lambda text: [float(n) for n in text.split(",")], default=[0.0],
                        help="the client waits this long before each call (API and raw alike), each value in turn: "
                             "threads that were idle wake up slower, and the API's time comes after a raw call's "
                             "or a wait in api_vs_binding.py")
    parser.add_argument("--postgresql", action="store_true", help="PostgreSQL, not SQLite")
    parser.add_argument("--before", type=Path, help="a checkout of robin served beside this one, the two interleaved")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_cleanly_on_signals()
    report = {"machine": {**machine(), "load_average_start": os.getloadavg()},
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    with ExitStack() as stack:
        result = run(args, stack)
    report["load_average_end"] = result["load_average_end"]
    report["timelines"] = [timeline(result, server, gap) for gap in dict.fromkeys(args.gaps_ms)
                           for server in result["servers"]]
    if args.before:
        report["before_minus_this"] = before_minus_this(result)
    report["raw"] = {"client": result["client"], "server": result["server"],
                     "raw": {str(gap): samples for gap, samples in result["raw"].items()}}
    for summary in report["timelines"]:
        print(markdown(summary) + "\n", flush=True)
    if args.before:
        print(f"before minus this checkout, per iteration: {report['before_minus_this']}")
    print(f"load average: start {report['machine']['load_average_start']}, end {report['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
