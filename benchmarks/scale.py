"""robin against a fleet of --count RBD images and as many CephFS paths (10,000 + 10,000 by default), measured.

One run starts its own dev Ceph cluster (or uses --ceph-conf) and a migrated SQLite database, all on 127.0.0.1,
then:

  raw creates   --count `RBD().create` and --count `mkdir` + quota xattr from 8 threads on one
                connection (one mount), then removed again (untimed): Ceph's own rate here;
  fleet         the same counts created through robin's service layer in-process (`volumes.service.create`,
                specs loaded by the API's schemas; quota, state machine and audit rows included), from
                8 threads, in one project; one volume in --data-every gets data written;
  refresh       `robin.audit.usage.refresh()` (what the maintenance loop and `?refresh=true` run) in a
                child process: its time and the child's peak RSS; with --compare, the same in turn from other
                robin source trees (`git archive`s of other commits), --rounds times, alternating; next to it
                the bare Ceph calls with no database, from as many threads (raw parallel: an image open +
                `diff_iterate`, and robin.ceph.object_map's reads of the images' object maps; a path's
                getxattr) and the open + diff from one thread (raw sequential); then, on --split-sample
                volumes of each kind, one at a time, what each call costs: an image's read-only open and
                close alone, the open + `diff_iterate`, the object map's reads (directory, header, map), a
                path's `ceph.dir.rbytes` getxattr; and the features and object-map flags of the images;
  drift         `robin.audit.drift.find_drift()` (the maintenance loop's survey) in a child process: time,
                peak RSS, findings; next to it the bare listing of the pool and of the project's directory;
  listing       through `robin serve` (--workers, maintenance loop off): one 1,000-item page of each kind,
                --repeats times, and the whole project walked page by page; raw `RBD().list` next to it;
  scrape        `GET /metrics`, --repeats times (goal: <= 50 ms), after the maintenance leader's pass that sums
                the totals it reports (`robin.audit.usage.store_totals`, timed once; a robin without it sums at
                every scrape);
  provisioner   the burst of benchmarks/provisioner.py (--claims PVCs at once through `robin provisioner`
                and the test Kubernetes API server) against that fleet, and its raw baseline.

It prints Markdown tables and writes JSON (--json) with the machine, the load average at each step and robin's
commit. Everything it starts is stopped by pid in `finally`, Ctrl-C and SIGTERM included; with --ceph-conf the
volumes it made are purged through robin's service layer.

    .venv/bin/python benchmarks/scale.py [--count 10000] [--claims 1000] [--json out.json]
    .venv/bin/python benchmarks/scale.py --only-refresh --compare /tmp/before --rounds 2  # before/after
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `benchmarks`, `tests.support` and robin importable

import cephfs  # noqa: E402
import rbd  # noqa: E402

from benchmarks import provisioner as prov  # noqa: E402
from benchmarks.api_vs_binding import (  # noqa: E402
    fmt,
    git_state,
    machine,
    make_admin_token,
    make_database,
    new_session,
    percentile,
    rados_ioctx,
    remove_empty_dirs,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from benchmarks.audit import CREATE_THREADS, Fleet, raw_audit  # noqa: E402
from robin.ceph import object_map  # noqa: E402
from robin.ceph.rbd_ops import feature_names  # noqa: E402
from robin.config import Settings  # noqa: E402

FS_NAME = "cephfs"
HTTP_TIMEOUT_S = 120
PAGE = 1000  # the API's largest page
GOAL_REFRESH_S = 15.0
GOAL_PAGE_MS = 50.0  # a 1,000-item page out of 100,000 volumes
GOAL_SCRAPE_MS = 50.0
COLLECTIONS = ("rbd-images", "cephfs-paths")
CHILD_TIMEOUT_S = 1800


def dist_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": statistics.median(ms), "p95_ms": percentile(ms, 95), "max_ms": max(ms)}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def step(name: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {name} (load {load()})", flush=True)


# --- creating: raw, then robin -------------------------------------------------------------------

def raw_creates(ioctx, fs, count: int, run_id: str) -> dict:
    """Ceph's own rate: benchmarks/provisioner.py's raw create, for images and for directories, then removed; from
    as many threads as the fleet is created from."""
    result, threads = {}, CREATE_THREADS
    for kind in ("rbd", "cephfs"):
        step(f"raw: {count} x {kind} create from {threads} threads")
        raw = prov.RawCreate(kind, ioctx, fs, f"{run_id}-{kind}")
        started = time.perf_counter()
        found = prov.raw_baseline(raw, f"raw-{run_id}-{kind}", 0, count, threads)["parallel"]
        found["with_removal_s"] = time.perf_counter() - started
        result[kind] = found
    return result


def grow_fleet(fleet: Fleet, count: int) -> dict:
    """Through robin's service layer (audit.py's Fleet: CREATE_THREADS threads, images first, then paths)."""
    step(f"robin: {count} RBD images + {count} CephFS paths through the service layer")
    started = time.perf_counter()
    fleet.grow_to(count)
    wall = time.perf_counter() - started
    return {"volumes": 2 * count, "wall_s": wall, "per_s": 2 * count / wall}


def osd_usage(conf: str) -> dict:
    """What the OSD holds after the fleet (memstore keeps it in memory) against the size it reports."""
    node, df = ceph_json(conf, "osd", "df")["nodes"][0], ceph_json(conf, "df")
    return {"osd_kb": node["kb"], "osd_kb_used": node["kb_used"], "utilization_pct": node["utilization"],
            "objects": {pool["name"]: pool["stats"]["objects"] for pool in df["pools"]}}


def ceph_json(conf: str, *command: str):
    return json.loads(subprocess.run(["ceph", "-c", conf, *command, "-f", "json"], capture_output=True, text=True,
                                     timeout=30, check=True).stdout)


# --- refresh and drift, each in a child process (its own peak RSS) -------------------------------

def child_main() -> None:
    """`python -c ...child_main()` OP DATABASE_URL CEPH_CONF PARALLELISM: run one maintenance operation once and
    print its figures as JSON on the last line."""
    op, database_url, conf, parallelism = sys.argv[1:5]
    from robin import create_app

    settings = Settings(database_url=database_url, ceph_conf=conf, log_level="WARNING",
                        usage_parallelism=int(parallelism))
    app = create_app(settings)
    rss_before = rss_kib()
    with app.app_context():
        started = time.perf_counter()
        if op == "refresh":
            from robin.audit import usage

            found = usage.refresh()
            detail = {"measured": found.measured, "failed": len(found.failed)}
        else:
            from robin.audit import drift

            found = drift.find_drift()
            detail = {"findings": found.counts(), "errors": found.errors[:5]}
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_before_kib": rss_before, "peak_rss_kib": rss_kib("VmHWM"), **detail}))


def rss_kib(field: str = "VmRSS") -> int:
    """The resident set now (VmRSS) or at its peak (VmHWM) of this process's own memory. Not getrusage's
    ru_maxrss: Linux carries it across exec, so a child started by a large parent reports the parent's size."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0])


def in_child(op: str, database_url: str, conf: str, parallelism: int, source: Path = REPO) -> dict:
    """Run OP in a child process on the robin of the source tree `source` (its benchmarks/scale.py's child_main)."""
    code = f"import sys; sys.path.insert(0, {str(source)!r}); from benchmarks.scale import child_main; child_main()"
    done = subprocess.run([sys.executable, "-c", code, op, database_url, conf, str(parallelism)],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=source,
                          env={**os.environ, "PYTHONPATH": str(source)})
    if done.returncode != 0:
        raise RuntimeError(f"{op} in a child process failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def raw_refresh(ioctx, fs, fleet: Fleet, threads: int) -> float:
    """audit.py's bare binding loop, split over `threads` threads (1: sequential), no database."""
    chunks = [(fleet.images[i::threads], fleet.paths[i::threads]) for i in range(threads)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda chunk: raw_audit(ioctx, fs, *chunk), chunks))
    return time.perf_counter() - started


def raw_map_refresh(ioctx, fs, fleet: Fleet, threads: int) -> float:
    """The images' object maps read in chunks as robin.audit.usage does (robin.ceph.object_map.from_maps on the
    bare ioctx), the paths' getxattr, from `threads` threads; no database, no CephConnection."""
    from robin.audit.usage import MAP_CHUNK

    chunks = [fleet.images[at:at + MAP_CHUNK] for at in range(0, len(fleet.images), MAP_CHUNK)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = list(pool.map(lambda chunk: object_map.from_maps(ioctx, chunk), chunks))
        list(pool.map(lambda path: fs.getxattr(path, "ceph.dir.rbytes"), fleet.paths))
    wall = time.perf_counter() - started
    if sum(map(len, found)) != len(fleet.images):
        raise RuntimeError("the object maps did not measure every image of the fleet")
    return wall


def _count_extents(_offset, _length, _exists) -> int:
    return 0


def _open_only(ioctx, name: str) -> None:
    with rbd.Image(ioctx, name, read_only=True):
        pass


def _open_and_diff(ioctx, name: str) -> None:
    with rbd.Image(ioctx, name, read_only=True) as image:
        image.diff_iterate(0, image.size(), None, _count_extents, whole_object=True)


def raw_cost_split(ioctx, fs, fleet: Fleet, sample: int) -> dict:
    """Where a volume's measurement goes, one call at a time on the first `sample` volumes of each kind (ms per
    volume, medians): the image's open and close alone, open + diff_iterate, the path's rbytes getxattr. And
    what makes diff_iterate cheap: the features and flags of the images robin made."""
    images, paths = fleet.images[:sample], fleet.paths[:sample]
    timings = {"open_close": (lambda name: _open_only(ioctx, name), images),
               "open_diff_iterate": (lambda name: _open_and_diff(ioctx, name), images),
               "object_map_reads": (lambda name: object_map.from_maps(ioctx, [name]), images),
               "getxattr_rbytes": (lambda path: fs.getxattr(path, "ceph.dir.rbytes"), paths)}
    found = {}
    for what, (call, targets) in timings.items():
        samples = []
        for target in targets:
            started = time.perf_counter()
            call(target)
            samples.append(time.perf_counter() - started)
        found[what] = dist_ms(samples)
    features, flags = set(), set()
    for name in images[:20]:
        with rbd.Image(ioctx, name, read_only=True) as image:
            features.add(image.features())
            flags.add(image.flags())
    found["features"] = sorted({name for mask in features for name in feature_names(mask)})
    found["object_map_invalid"] = any(flag & rbd.RBD_FLAG_OBJECT_MAP_INVALID for flag in flags)
    found["fast_diff_invalid"] = any(flag & rbd.RBD_FLAG_FAST_DIFF_INVALID for flag in flags)
    return found


def raw_survey_listing(ioctx, fs, project_dir: str) -> float:
    """The listing part of a drift survey, bare: the pool's images and the project directory's entries."""
    started = time.perf_counter()
    rbd.RBD().list(ioctx)
    handle = fs.opendir(project_dir)
    try:
        while fs.readdir(handle):
            pass
    finally:
        fs.closedir(handle)
    return time.perf_counter() - started


def refreshed(args, database_url: str, conf: str, source: Path) -> dict:
    step(f"usage refresh (child process, robin of {source})")
    found = in_child("refresh", database_url, conf, args.parallelism, source)
    if found["failed"] or found["measured"] != 2 * args.count:
        raise RuntimeError(f"the refresh from {source} measured {found['measured']} of {2 * args.count}, "
                           f"failed {found['failed']}")
    return {**found, "source": str(source), "load": load()}


def refresh_rounds(args, database_url: str, conf: str, ioctx, fs, fleet: Fleet) -> list[dict]:
    """--rounds of: the refresh from each source tree (this one and --compare's), in turn, alternating the order
    from round to round; then the raw parallel calls, open + diff and object map reads."""
    rounds = []
    for number in range(args.rounds):
        sources = [REPO, *args.compare]
        runs = [refreshed(args, database_url, conf, source) for source in (sources[::-1] if number % 2 else sources)]
        step("the raw calls, parallel: open + diff_iterate, then the object maps")
        rounds.append({"runs": runs, "raw_s": raw_refresh(ioctx, fs, fleet, args.parallelism),
                       "raw_map_s": raw_map_refresh(ioctx, fs, fleet, args.parallelism), "load": load()})
    return rounds


def maintenance_ops(args, database_url: str, conf: str, ioctx, fs, fleet: Fleet) -> dict:
    rounds = refresh_rounds(args, database_url, conf, ioctx, fs, fleet)
    refresh = {**rounds[0]["runs"][0], "raw_s": rounds[0]["raw_s"], "raw_map_s": rounds[0]["raw_map_s"],
               "rounds": rounds}
    refresh["raw_sequential_s"] = raw_refresh(ioctx, fs, fleet, 1)
    refresh["split"] = raw_cost_split(ioctx, fs, fleet, min(args.split_sample, args.count))
    if args.only_refresh:
        return {"refresh": refresh}
    step("drift survey (child process), then the raw listing")
    survey = in_child("drift", database_url, conf, args.parallelism)
    project_dir = str(Path(fleet.paths[0]).parent)
    survey["raw_listing_s"] = raw_survey_listing(ioctx, fs, project_dir)
    return {"refresh": refresh, "drift": survey}


# --- through robin serve: listing, scrape ---------------------------------------------------------

def page_times(session, url: str, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = session.get(url, params={"limit": PAGE}, timeout=HTTP_TIMEOUT_S)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
    return {**dist_ms(seconds), "items": len(response.json()["items"]), "bytes": len(response.content)}


def walk(session, url: str) -> dict:
    """Every page of the collection, in order; the count must be the fleet's."""
    started, pages, items, cursor = time.perf_counter(), [], 0, None
    while True:
        page_started = time.perf_counter()
        response = session.get(url, params={"limit": PAGE, **({"cursor": cursor} if cursor else {})},
                               timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        pages.append(time.perf_counter() - page_started)
        body = response.json()
        items += len(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return {"items": items, "pages": len(pages), "wall_s": time.perf_counter() - started,
                    "page": dist_ms(pages)}


def listing(args, robin_url: str, token: str, project: str, ioctx) -> dict:
    step("listing: 1,000-item pages and the whole project walked")
    session, result = new_session(token), {}
    for collection in COLLECTIONS:
        url = f"{robin_url}/api/v2/projects/{project}/{collection}"
        session.get(url, params={"limit": 10}, timeout=HTTP_TIMEOUT_S).raise_for_status()  # warm
        result[collection] = {"page": page_times(session, url, args.repeats), "walk": walk(session, url)}
        if result[collection]["walk"]["items"] != args.count:
            raise RuntimeError(f"walking {collection} found {result[collection]['walk']['items']}, not {args.count}")
    raw = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        rbd.RBD().list(ioctx)
        raw.append(time.perf_counter() - started)
    result["raw_rbd_list"] = dist_ms(raw)
    return result


def totals_pass(database_url: str, conf: str) -> float | None:
    """The maintenance leader's pass that sums the totals a scrape reports, once (robin serve's loop is off
    here); None for a robin without it, whose scrape sums every volume itself."""
    from robin import create_app
    from robin.audit import usage

    if not hasattr(usage, "store_totals"):
        return None
    app = create_app(Settings(database_url=database_url, ceph_conf=conf, log_level="WARNING"))
    with app.app_context():
        started = time.perf_counter()
        usage.store_totals()
        return time.perf_counter() - started


def scrape(args, robin_url: str, token: str, database_url: str, conf: str) -> dict:
    step("the totals pass, then /metrics scrapes")
    totals_s = totals_pass(database_url, conf)
    session, seconds = new_session(token), []
    session.get(f"{robin_url}/metrics", timeout=HTTP_TIMEOUT_S).raise_for_status()  # warm
    for _ in range(args.repeats):
        started = time.perf_counter()
        response = session.get(f"{robin_url}/metrics", timeout=HTTP_TIMEOUT_S)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
    return {**dist_ms(seconds), "bytes": len(response.content), "totals_pass_s": totals_s}


# --- the provisioner burst against the fleet -------------------------------------------------------

def provisioner_burst(args, robin_url: str, token: str, conf: str, ioctx, run_id: str, report: dict) -> dict:
    """benchmarks/provisioner.py's burst and raw baseline, with the fleet in robin's database and pool."""
    step(f"provisioner burst: {args.claims} PVCs")
    prov_args = prov.parse_args(["--claims", str(args.claims), "--sequential", "0", "--workers", str(args.workers)])
    directory = Path(tempfile.mkdtemp(prefix="robin-bench-scale-"))  # logs: left for a look
    exits = report["cleanup"].setdefault("exit_codes", {})
    from robin.ceph.connection import CephConnection

    with ExitStack() as stack:
        conn = CephConnection("bench", {"conf_path": conf, "client_id": "admin"}, Settings().ceph_timeout)
        stack.callback(conn.close)
        kube, _ = prov.start_kube_apiserver(stack, prov_args.history_size, directory, exits)
        bench = prov.Bench(prov_args, kube, robin_url, token, run_id)
        bench.set_up(prov_args.warmup + prov_args.claims)
        # Registered before the provisioner starts, so it runs after the provisioner has stopped.
        stack.callback(bench.purge_volumes, conn, ioctx, None, report["cleanup"].setdefault("provisioner", {}))
        watch = prov.ClaimWatch(kube, bench.namespace)
        watch.start()
        stack.callback(watch.stop)
        prov.start_provisioner(stack, prov_args, kube, robin_url, token, directory, exits)
        bench.burst(watch, f"warm-{run_id}", prov_args.warmup, progress=False)
        burst = bench.burst(watch, f"burst-{run_id}", prov_args.claims, progress=True)
        check = bench.check(ioctx)
        if not check["ok"]:
            raise RuntimeError(f"the provisioner burst's check failed: {check}")
    raw = prov.raw_baseline(prov.RawCreate("rbd", ioctx, None, f"prov-{run_id}"), f"rawprov-{run_id}", 0,
                            args.claims, prov_args.raw_threads)["parallel"]
    return {"burst": burst, "check": check, "raw": raw}


# --- reporting ------------------------------------------------------------------------------------

def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def markdown(report: dict) -> str:
    s, steps = report["settings"], report["steps"]
    n, lines = s["count"], []
    raw, fleet = steps.get("raw_creates"), steps["fleet"]
    raw_cell = "(not run)"
    if raw:
        raw_s = raw["rbd"]["wall_s"] + raw["cephfs"]["wall_s"]
        raw_cell = f"{raw_s:.1f} s ({2 * n / raw_s:.0f}/s)"
    lines += [f"Fleet: {n} RBD images + {n} CephFS paths in one project, SQLite, {s['threads']} threads each way.",
              "", "| step | robin | raw bindings, same run | load at start |", "|---|---:|---:|---:|",
              f"| create {2 * n} volumes | {fleet['wall_s']:.1f} s ({fleet['per_s']:.0f}/s; service layer "
              f"in-process) | {raw_cell} | {report['load']['fleet']} |"]
    m = steps.get("maintenance")
    if m:
        r, d = m["refresh"], m.get("drift")
        sp = r["split"]
        lines += [f"| usage refresh, {2 * n} volumes ({s['parallelism']} threads) | {r['seconds']:.1f} s, peak RSS "
                  f"{r['peak_rss_kib'] / 1024:.0f} MiB ({r['rss_before_kib'] / 1024:.0f} before) | open + diff "
                  f"{r['raw_s']:.1f} s, object maps {r['raw_map_s']:.2f} s ({s['parallelism']} threads); open + diff "
                  f"{r['raw_sequential_s']:.1f} s (sequential) | {report['load']['maintenance']} |",
                  f"| one measurement at a time, ms p50 ({sp['open_close']['n']} of each kind) | | image open + close "
                  f"{fmt(sp['open_close']['p50_ms'])}, open + diff_iterate {fmt(sp['open_diff_iterate']['p50_ms'])}, "
                  f"object map reads {fmt(sp['object_map_reads']['p50_ms'])}, path getxattr "
                  f"{fmt(sp['getxattr_rbytes']['p50_ms'])}; features {','.join(sp['features'])}, "
                  f"object map invalid: {sp['object_map_invalid']} | |"]
        if d:
            lines.append(f"| drift survey | {d['seconds']:.1f} s, peak RSS {d['peak_rss_kib'] / 1024:.0f} MiB, "
                         f"findings {sum(d['findings'].values())} | {d['raw_listing_s']:.2f} s (listing only) | |")
    li = steps.get("listing")
    if li:
        for collection in COLLECTIONS:
            page, whole = li[collection]["page"], li[collection]["walk"]
            lines.append(f"| `GET {collection}?limit=1000`, p50 / p95 | {fmt(page['p50_ms'])} / "
                         f"{fmt(page['p95_ms'])} ms ({page['bytes'] / 1024:.0f} KiB) | `RBD().list` names only: "
                         f"{fmt(li['raw_rbd_list']['p50_ms'])} ms | {report['load']['listing']} |")
            lines.append(f"| all {whole['items']} {collection}, {whole['pages']} pages | {whole['wall_s']:.2f} s "
                         f"(page p50 {fmt(whole['page']['p50_ms'])} ms) | | |")
    sc = steps.get("scrape")
    if sc:
        totals_s = sc.get("totals_pass_s")
        summed = "" if totals_s is None else f"; the leader's totals pass {totals_s * 1000:.0f} ms"
        lines.append(f"| `GET /metrics`, p50 / p95 | {fmt(sc['p50_ms'])} / {fmt(sc['p95_ms'])} ms "
                     f"({sc['bytes'] / 1024:.0f} KiB){summed} | | {report['load']['scrape']} |")
    pb = steps.get("provisioner")
    if pb:
        b, rw = pb["burst"], pb["raw"]
        lines.append(f"| provisioner burst, {b['n']} PVCs | {b['pvcs_per_s']:.1f} PVCs/s, create-to-Bound p50 "
                     f"{fmt(b['create_to_bound']['p50_ms'])} ms | {rw['per_s']:.0f} creates/s ({rw['threads']} "
                     f"threads) | {report['load']['provisioner']} |")
    if m and len(m["refresh"]["rounds"]) * len(m["refresh"]["rounds"][0]["runs"]) > 1:
        lines += ["", "| round | robin source | refresh (s) | peak RSS (MiB) | load after |",
                  "|---|---|---:|---:|---:|"]
        for number, found in enumerate(m["refresh"]["rounds"], 1):
            lines += [f"| {number} | {run['source']} | {run['seconds']:.2f} | {run['peak_rss_kib'] / 1024:.0f} "
                      f"| {run['load']} |" for run in found["runs"]]
            lines.append(f"| {number} | raw, parallel: open + diff / object maps | {found['raw_s']:.2f} / "
                         f"{found['raw_map_s']:.2f} | | {found['load']} |")
    goals = []
    if m:
        goals.append(f"refresh <= {GOAL_REFRESH_S:g} s: {verdict(m['refresh']['seconds'] <= GOAL_REFRESH_S)}")
    if li:
        goals.append(f"1,000-item page <= {GOAL_PAGE_MS:g} ms (p50, RBD): "
                     f"{verdict(li['rbd-images']['page']['p50_ms'] <= GOAL_PAGE_MS)}")
    if sc:
        goals.append(f"scrape <= {GOAL_SCRAPE_MS:g} ms (p50): {verdict(sc['p50_ms'] <= GOAL_SCRAPE_MS)}")
    if pb:
        goals.append(f"burst >= 150 PVCs/s: {verdict(pb['burst']['pvcs_per_s'] >= 150)}")
    lines += ["", "Goals at this fleet size: " + "; ".join(goals) + "."]
    if "osd" in report:
        o = report["osd"]
        lines += ["", f"OSD after the fleet: {o['osd_kb_used'] / 1024:.0f} MiB used of {o['osd_kb'] / 2**20:.0f} GiB "
                      f"memstore ({o['utilization_pct']:.2f}%); objects per pool: {o['objects']}."]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000, help="RBD images, and as many CephFS paths")
    parser.add_argument("--parallelism", type=int, default=Settings().usage_parallelism,
                        help="ROBIN_USAGE_PARALLELISM for the refresh (and the raw refresh's threads)")
    parser.add_argument("--workers", type=int, default=4, help="robin serve's gunicorn workers")
    parser.add_argument("--repeats", type=int, default=20, help="timed requests per page and per scrape")
    parser.add_argument("--claims", type=int, default=1000, help="PVCs of the provisioner burst (0: no burst)")
    parser.add_argument("--data-every", type=int, default=100, help="write data into one volume in this many")
    parser.add_argument("--data-bytes", type=int, default=2**20, help="bytes written into each such volume")
    parser.add_argument("--split-sample", type=int, default=500,
                        help="volumes of each kind whose measuring calls are timed one by one")
    parser.add_argument("--only-refresh", action="store_true",
                        help="make the fleet and measure the refresh only (no raw creates, drift, serve steps)")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="another robin source tree (a `git archive` of a commit) whose refresh runs in turn")
    parser.add_argument("--rounds", type=int, default=1, help="refreshes from each source tree, alternating")
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if min(args.count, args.parallelism, args.workers, args.repeats, args.data_every, args.split_sample,
           args.rounds) < 1 or args.claims < 0:
        parser.error("--count, --parallelism, --workers, --repeats, --data-every, --split-sample and --rounds must "
                     "be positive")
    for source in args.compare:
        if not all((source / part).is_file() for part in ("robin/audit/usage.py", "benchmarks/scale.py")):
            parser.error(f"--compare {source}: not a robin source tree with benchmarks/scale.py")
    return args


def run(args, report: dict, stack: ExitStack) -> None:
    from robin import create_app
    from robin.auth.identity import LOCAL_ADMIN
    from robin.clusters.service import registry
    from robin.projects import service as projects

    run_id = uuid.uuid4().hex[:6]
    steps, loads = report["steps"], report["load"]
    conf = start_cluster(stack, args.ceph_conf)
    database_url = make_database(stack)
    app = create_app(Settings(database_url=database_url, ceph_conf=conf, log_level="WARNING",
                              max_volume_bytes=2**50))
    stack.callback(registry.connections.close)  # before the cluster goes down (registered earlier)
    ioctx = stack.enter_context(rados_ioctx(conf))
    fs = cephfs.LibCephFS(conffile=conf)
    stack.callback(fs.shutdown)
    fs.mount(filesystem_name=FS_NAME.encode())

    if not args.only_refresh:
        loads["raw_creates"] = load()
        steps["raw_creates"] = raw_creates(ioctx, fs, args.count, run_id)
    project = f"scale-{run_id}"
    with app.app_context():
        projects.create(LOCAL_ADMIN, project, {"max_bytes": 2**60, "max_volumes": 10**7, "max_snapshots": 10**6})
    fleet = Fleet(app, project, ioctx, fs, args.data_every, args.data_bytes)
    if args.ceph_conf:  # a cluster of someone else's: purge the fleet, then remove the project's empty directory
        from benchmarks.audit import cleanup

        stack.callback(remove_empty_dirs, fs, [f"{Settings().cephfs_root}/{project}"])
        stack.callback(cleanup, app, fleet)
    loads["fleet"] = load()
    steps["fleet"] = grow_fleet(fleet, args.count)
    report["osd"] = osd_usage(conf)
    loads["maintenance"] = load()
    steps["maintenance"] = maintenance_ops(args, database_url, conf, ioctx, fs, fleet)
    if args.only_refresh:
        return
    token = make_admin_token(database_url, conf)
    from tests.support.server import running_server

    step(f"robin serve: {args.workers} workers, maintenance loop off")
    # The maintenance loop off: its refresh and survey are measured above; here it would only run meanwhile.
    with running_server(database_url, conf, workers=args.workers,
                        extra_env={"PYTHONPATH": str(REPO), "ROBIN_MAINTENANCE_INTERVAL": "0"}) as robin_url:
        loads["listing"] = load()
        steps["listing"] = listing(args, robin_url, token, project, ioctx)
        loads["scrape"] = load()
        steps["scrape"] = scrape(args, robin_url, token, database_url, conf)
        if args.claims:
            loads["provisioner"] = load()
            steps["provisioner"] = provisioner_burst(args, robin_url, token, conf, ioctx, run_id, report)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not take the index lock from others committing
    stop_cleanly_on_signals()
    started = time.perf_counter()
    report = {"machine": {**machine(), "load_average_start": os.getloadavg()},
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"count": args.count, "threads": CREATE_THREADS, "parallelism": args.parallelism,
                           "workers": args.workers, "repeats": args.repeats, "claims": args.claims,
                           "data_every": args.data_every, "data_bytes": args.data_bytes, "database": "sqlite",
                           "compare": [str(source) for source in args.compare], "rounds": args.rounds,
                           "fleet_created_by": "robin's service layer in-process"},
              "steps": {}, "load": {}, "cleanup": {}}
    try:
        with ExitStack() as stack:
            run(args, report, stack)
    finally:
        report["wall_s"] = round(time.perf_counter() - started, 1)
        report["at_end"] = {**git_state(), "load_average_end": os.getloadavg()}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
            print(f"\nwrote {args.json}")
    print("\n" + markdown(report), flush=True)
    print(f"\nwhole run: {report['wall_s']} s; cleanup: {json.dumps(report['cleanup'])}")
    if report["machine"]["robin_source"] != report["at_end"]["robin_source"]:
        print("\nWARNING: robin's source changed during the run: the processes may have run different code",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
