"""What `robin provisioner` does with many PersistentVolumeClaims at once, against the raw binding call.

One run starts its own dev Ceph cluster (or uses --ceph-conf), a migrated SQLite database, robin under
gunicorn, our test Kubernetes API server (tests/kube_apiserver, which annotates claims for their provisioner
and binds PVs as kube-controller-manager does) and `robin provisioner`, all on 127.0.0.1, then:

  burst        --claims PVCs (64Mi, a robin.io/rbd class) created at once from --client-threads threads;
               a list+watch of the namespace, started before, notes when each claim is first seen Bound:
               PVCs/s from the first create to the last Bound, p50/p90/p99/max create-to-Bound, the
               provisioner's own histogram and error counters, and the CPU each process used;
  one at a time  --sequential PVCs, each created once the previous one is Bound: latency without a queue;
  raw          as many `rbd.RBD().create` calls (robin's default features) one at a time, and --claims of
               them from --raw-threads threads, on one connection; those images are removed again.

It checks that every claim is Bound and that robin has exactly one volume per claim, purges robin's volumes
(`DELETE ?purge=true`) once the provisioner is stopped, prints Markdown tables and writes JSON with the
machine, Ceph version and robin commit.

    .venv/bin/python benchmarks/provisioner.py [--claims 1000] [--sequential 100] [--json out.json]

Everything it starts (cluster daemons, gunicorn, the API server, the provisioner) is stopped by pid in
`finally`, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `benchmarks`, `tests.support` and robin importable

import rbd  # noqa: E402  (after the sys.path line above)
import requests  # noqa: E402
import urllib3  # noqa: E402
import yaml  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.api_vs_binding import (  # noqa: E402
    fmt,
    git_state,
    machine,
    make_admin_token,
    make_database,
    mount_cephfs,
    new_session,
    percentile,
    rados_ioctx,
    remove_empty_dirs,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from robin.ceph import rbd_ops  # noqa: E402
from robin.ceph.connection import CephConnection  # noqa: E402
from robin.config import Settings  # noqa: E402
from tests.support.net import free_port, wait_until  # noqa: E402
from tests.support.server import running_server  # noqa: E402

MiB = 2**20
CLAIM_SIZE = "64Mi"  # RBD images are thin: the size costs nothing
CLAIM_BYTES = 64 * MiB
POOL = "rbd"  # the dev cluster's RBD pool, robin's default
FS_NAME = "cephfs"
QUOTA_XATTR = "ceph.quota.max_bytes"
PROVISIONERS = {"rbd": "robin.io/rbd", "cephfs": "robin.io/cephfs"}
CLASS_PARAMETERS = {"rbd": {"pool": POOL}, "cephfs": {"fs": FS_NAME}}
COLLECTIONS = {"rbd": "rbd-images", "cephfs": "cephfs-paths"}
VOLUME_ANNOTATION = "robin.io/volume"  # set by the provisioner when it takes a claim on (its first write)
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"  # set by the PV controller: "provision this"
PROJECT_LABEL = "robin.io/project"  # on every PV the provisioner makes
HTTP_TIMEOUT_S = 60
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
PROGRESS_EVERY_S = 5.0
RAW_WARMUP = 5
CREATE_CONNECTIONS = 64  # connections kept to the test API server for creates: more than --client-threads' default
# Issue 17's goals: a burst of 1,000 claims at 150 PVCs/s or more, one claim at a time Bound within 12 ms (p50).
GOAL_PVCS_PER_S = 150.0
GOAL_ONE_AT_A_TIME_P50_MS = 12.0
CEPH_CSI = "published ceph-csi figures: about 2.5 PVCs/s and ~2 s per CreateVolume"
# The provisioner's Prometheus names (robin/provisioner/metrics.py) and robin serve's (robin/metrics.py).
PROVISIONING = "robin_provisioner_provisioning_duration_seconds"
PROVISIONING_STEPS = ("robin_provisioner_step_duration_seconds", ("hold", "volume", "pv"))
STEP_LABELS = {"hold": "hold (the claim's finalizer `PATCH`, client side)",
               "volume": "volume (robin's create, client side)", "pv": "pv (the PV's `POST`, client side)"}
ROBIN_REQUESTS = "robin_http_request_duration_seconds"
ROBIN_CEPH_OPS = "robin_ceph_operation_duration_seconds"
PROVISIONED_OK = ("robin_provisioner_operations_total", (("operation", "provision"), ("outcome", "ok")))
COUNTERS = ("robin_provisioner_errors_total", "robin_provisioner_operations_total",
            "robin_provisioner_watch_restarts_total", "robin_provisioner_events_dropped_total")


# --- statistics ---------------------------------------------------------------------------------

def dist_ms(seconds: list[float]) -> dict:
    """n, mean, p50/p90/p99 (nearest rank: an actual sample) and max, in ms."""
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "mean_ms": statistics.fmean(ms), "p50_ms": percentile(ms, 50),
            "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99), "min_ms": min(ms), "max_ms": max(ms)}


def source_hash(*directories: str) -> str:
    """As api_vs_binding.source_fingerprint (which is source_hash("robin", "migrations")), for any directories."""
    digest = hashlib.sha256()
    for path in sorted(path for directory in directories for path in (REPO / directory).rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# --- Prometheus scrapes --------------------------------------------------------------------------

def scrape(url: str, token: str | None = None) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} of a /metrics page."""
    response = (new_session(token) if token else requests).get(url, timeout=10)
    response.raise_for_status()
    text = response.text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def delta(before: dict, after: dict) -> dict:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def histogram(samples: dict, name: str, **labels: str) -> dict:
    """One histogram summed over the label sets matching `labels`: count, sum, cumulative buckets."""
    def matches(key):
        items = dict(key[1])
        return all(items.get(k) == v for k, v in labels.items())

    count = sum(v for k, v in samples.items() if k[0] == f"{name}_count" and matches(k))
    total = sum(v for k, v in samples.items() if k[0] == f"{name}_sum" and matches(k))
    buckets: dict[float, float] = {}
    for key, value in samples.items():
        if key[0] == f"{name}_bucket" and matches(key):
            le = float(dict(key[1])["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    return {"count": count, "sum_s": total, "buckets": sorted(buckets.items())}


def histogram_quantile(hist: dict, q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket holding the rank (seconds)."""
    if hist["count"] <= 0:
        return None
    rank, lower, below = q * hist["count"], 0.0, 0.0
    for le, cumulative in hist["buckets"]:
        if cumulative >= rank:
            if le == float("inf"):
                return lower  # above the highest bound: that bound is all one can say
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return lower


def histogram_summary(hist: dict) -> dict:
    count = int(round(hist["count"]))
    p50 = histogram_quantile(hist, 0.5)
    p99 = histogram_quantile(hist, 0.99)
    return {"count": count, "mean_ms": hist["sum_s"] / hist["count"] * 1000 if count else None,
            "p50_estimate_ms": p50 * 1000 if p50 is not None else None,
            "p99_estimate_ms": p99 * 1000 if p99 is not None else None}


def counters(samples: dict) -> dict:
    """The provisioner's counters that moved, as {'name{label=value,...}': increase}."""
    return {name + "{" + ",".join(f"{k}={v}" for k, v in labels) + "}": value
            for (name, labels), value in sorted(samples.items()) if name in COUNTERS and value}


def internals(prov_delta: dict, robin_delta: dict, kind: str) -> dict:
    """What the provisioner's and robin's own metrics say about one phase."""
    route = f"/api/v2/projects/<project>/{COLLECTIONS[kind]}"
    ceph_ops = sorted({dict(k[1])["operation"] for k, v in robin_delta.items()
                       if k[0] == f"{ROBIN_CEPH_OPS}_count" and v > 0})
    name, steps = PROVISIONING_STEPS
    return {"provisioning": histogram_summary(histogram(prov_delta, PROVISIONING, type=kind)),
            "provisioning_steps": {step: histogram_summary(histogram(prov_delta, name, step=step)) for step in steps},
            "robin_create_request": histogram_summary(histogram(robin_delta, ROBIN_REQUESTS, method="POST",
                                                                route=route, status="201")),
            "robin_ceph_ops": {op: histogram_summary(histogram(robin_delta, ROBIN_CEPH_OPS, operation=op))
                               for op in ceph_ops},
            "provisioner_counters": counters(prov_delta),
            # Every call the provisioner (and this benchmark's checks) made to robin, by route and status.
            "robin_requests": {f"{dict(k[1])['method']} {dict(k[1])['route']} {dict(k[1])['status']}": int(v)
                               for k, v in sorted(robin_delta.items())
                               if k[0] == f"{ROBIN_REQUESTS}_count" and v > 0
                               and dict(k[1])["route"] != "/metrics"}}  # this benchmark's own scrapes


# --- CPU accounting ------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime, all threads


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def pids_with(*needles: bytes) -> list[int]:
    """Processes whose command line contains every needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if all(needle in cmdline for needle in needles):
                found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds of each part of the run between two snapshots (per pid, so a restarted gunicorn
    worker is counted from its start), and what the rest of the machine used meanwhile."""

    def __init__(self, components: dict[str, Callable[[], list[int]]]):
        self.components = components

    def snapshot(self) -> dict:
        busy, total = machine_cpu_s()
        return {"wall": time.perf_counter(), "busy": busy, "total": total,
                "pids": {name: {pid: process_cpu_s(pid) for pid in pids()} for name, pids in self.components.items()},
                "load": os.getloadavg()}

    @staticmethod
    def between(start: dict, end: dict) -> dict:
        wall = end["wall"] - start["wall"]
        parts = {}
        for name, pids in end["pids"].items():
            used = sum(cpu - (start["pids"].get(name, {}).get(pid) or 0.0) for pid, cpu in pids.items()
                       if cpu is not None)
            parts[name] = {"processes": len(pids), "cpu_s": used, "cores": used / wall if wall else 0.0}
        busy = end["busy"] - start["busy"]
        ours = sum(part["cpu_s"] for part in parts.values())
        rest = max(0.0, busy - ours)  # clock-tick rounding can make it a hair negative
        parts["everything else on the machine"] = {"processes": None, "cpu_s": rest,
                                                   "cores": rest / wall if wall else 0.0}
        capacity = end["total"] - start["total"]
        return {"wall_s": wall, "machine_busy_fraction": busy / capacity if capacity else None,
                "load_average_end": end["load"], "parts": parts}


# --- the test Kubernetes API server and the provisioner, as subprocesses -------------------------

class Subprocess:
    """A child in its own session, logging to a file, stopped by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, exits: dict | None = None):
        self.name, self.log_path, self.exits = name, log_path, exits
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self._log, stderr=self._log,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}): "
                               f"{self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: it and its children only
                self.process.wait()
        self._log.close()
        if self.exits is not None:
            self.exits[self.name] = self.process.returncode
        print(f"{self.name} exited with {self.process.returncode}; log: {self.log_path}", flush=True)


def child_env(**extra: str) -> dict:
    # PYTHONPATH: the children run the code next to this script, as robin serve does.
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


class KubeApi:
    """The test API server's URL and token (from the kubeconfig it wrote), and requests on it. Creates go through
    urllib3's pool, not requests: the client's CPU is taken from the same two cores as the chain measured, and
    requests doubles it (1.2 against 0.6 ms a request on this machine)."""

    def __init__(self, kubeconfig: Path):
        config = yaml.safe_load(kubeconfig.read_text())
        self.kubeconfig = kubeconfig
        self.url = config["clusters"][0]["cluster"]["server"]
        self.token = config["users"][0]["user"]["token"]
        self._pool = urllib3.connection_from_url(self.url, maxsize=CREATE_CONNECTIONS)
        self._headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def session(self) -> requests.Session:
        return new_session(self.token)

    def create(self, path: str, body: dict | bytes) -> dict:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = self._pool.urlopen("POST", path, body=data, headers=self._headers, timeout=HTTP_TIMEOUT_S,
                                      retries=False)
        if response.status != 201:
            raise RuntimeError(f"POST {path}: {response.status} {response.data[:500]!r}")
        return json.loads(response.data)

    def get(self, session: requests.Session, path: str, **params) -> dict:
        response = session.get(self.url + path, params=params, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return response.json()


def start_kube_apiserver(stack: ExitStack, history_size: int, directory: Path,
                         exits: dict) -> tuple[KubeApi, Subprocess]:
    port, kubeconfig = free_port(), directory / "kubeconfig"
    server = Subprocess("test kube-apiserver", [sys.executable, "-m", "tests.kube_apiserver", "--port", str(port),
                                                "--kubeconfig", str(kubeconfig), "--history-size", str(history_size)],
                        child_env(), directory / "kube-apiserver.log", exits)
    stack.callback(server.stop)

    def up() -> bool:
        server.check_alive()
        # It prints this line once start() has returned, i.e. once the kubeconfig is completely written: the
        # file exists, and /healthz answers, a moment before.
        return b"kube-apiserver listening on" in server.log_path.read_bytes()

    wait_until(up, START_TIMEOUT_S, "the test kube-apiserver")
    return KubeApi(kubeconfig), server


def start_provisioner(stack: ExitStack, args, kube: KubeApi, robin_url: str, token: str, directory: Path,
                      exits: dict) -> tuple[Subprocess, str]:
    metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
    argv = [sys.executable, "-m", "robin.cli", "provisioner", "--kubeconfig", str(kube.kubeconfig),
            "--metrics-address", metrics_url.removeprefix("http://").removesuffix("/metrics"),
            "--workers", str(args.provisioner_workers), "--qps", str(args.qps), "--burst", str(args.burst),
            "--leader-elect" if args.leader_elect else "--no-leader-elect"]
    if args.leader_elect:
        argv += ["--lease-namespace", "default"]
    provisioner = Subprocess("robin provisioner", argv, child_env(ROBIN_URL=robin_url, ROBIN_TOKEN=token,
                                                                   ROBIN_LOG_LEVEL="INFO"),
                             directory / "provisioner.log", exits)
    stack.callback(provisioner.stop)

    def up() -> bool:
        provisioner.check_alive()
        try:
            return requests.get(metrics_url, timeout=1).ok
        except requests.RequestException:
            return False

    wait_until(up, START_TIMEOUT_S, "robin provisioner's /metrics")
    return provisioner, metrics_url


# --- watching the claims -------------------------------------------------------------------------

class WatchLoop:
    """A list+watch of one collection (as a Kubernetes client would see it) in a thread, each object handed to
    `seen(obj, when)`, `when` taken as its line arrived."""

    def __init__(self, kube: KubeApi, path: str, seen: Callable[[dict, float], None], **params: str):
        self.kube, self.path, self.params, self.seen = kube, path, params, seen
        self.events = self.restarts = self.relists = 0
        self._stop = threading.Event()
        self._session = kube.session()
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self._rv = ""

    def start(self) -> None:
        self._rv = self._list()  # before any create: nothing can be missed
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()  # the thread ends at the next event or bookmark, or when the server stops
        self._thread.join(timeout=1)

    def _list(self) -> str:
        listing = self.kube.get(self._session, self.path, **self.params)
        now = time.perf_counter()
        for obj in listing["items"]:
            self.seen(obj, now)
        return listing["metadata"]["resourceVersion"]

    def _run(self) -> None:
        while not self._stop.is_set():
            params = {**self.params, "watch": "true", "resourceVersion": self._rv, "allowWatchBookmarks": "true",
                      "timeoutSeconds": "600"}
            try:
                with self._session.get(self.kube.url + self.path, params=params, stream=True,
                                       timeout=(5, 660)) as response:
                    response.raise_for_status()
                    for line in response.iter_lines(chunk_size=None):
                        now = time.perf_counter()
                        if self._stop.is_set():
                            return
                        if line:
                            self._event(json.loads(line), now)
            except _Expired:
                self.relists += 1
                self._rv = self._list()
            except (requests.RequestException, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.restarts += 1
                print(f"note: the watch of {self.path} broke off ({exc}); watching again", file=sys.stderr)
                time.sleep(0.2)

    def _event(self, event: dict, now: float) -> None:
        obj = event["object"]
        if event["type"] == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise ValueError(f"watch error: {obj}")
        self._rv = obj["metadata"]["resourceVersion"]
        if event["type"] in ("ADDED", "MODIFIED"):
            self.events += 1
            self.seen(obj, now)


class ClaimWatch:
    """Watches of one namespace's PVCs and (given the project) of the PVs of its robin project, noting per claim
    when it was first seen asked of the provisioner (the PV controller's annotation), taken on by the provisioner
    (annotated robin.io/volume, its first write), with its PV made (the PV's first event), and Bound."""

    def __init__(self, kube: KubeApi, namespace: str, project: str | None = None):
        self.asked: dict[str, float] = {}
        self.held: dict[str, float] = {}
        self.volume_made: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.cond = threading.Condition()
        self._loops = [WatchLoop(kube, f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", self._seen)]
        if project is not None:
            self._namespace = namespace
            self._loops.append(WatchLoop(kube, "/api/v1/persistentvolumes", self._seen_volume,
                                         labelSelector=f"{PROJECT_LABEL}={project}"))

    @property
    def events(self) -> int:
        return sum(loop.events for loop in self._loops)

    @property
    def restarts(self) -> int:
        return sum(loop.restarts for loop in self._loops)

    @property
    def relists(self) -> int:
        return sum(loop.relists for loop in self._loops)

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        for loop in self._loops:
            loop.stop()

    def _seen(self, obj: dict, now: float) -> None:
        name, annotations = obj["metadata"]["name"], obj["metadata"].get("annotations") or {}
        with self.cond:
            if name not in self.asked and STORAGE_PROVISIONER in annotations:
                self.asked[name] = now
            if name not in self.held and VOLUME_ANNOTATION in annotations:
                self.held[name] = now
            if name not in self.bound and (obj.get("status") or {}).get("phase") == "Bound":
                self.bound[name] = now
                self.cond.notify_all()

    def _seen_volume(self, obj: dict, now: float) -> None:
        claim = (obj.get("spec") or {}).get("claimRef") or {}
        if claim.get("namespace") == self._namespace:
            with self.cond:
                self.volume_made.setdefault(claim.get("name"), now)
                self.cond.notify_all()

    def wait_volume_seen(self, name: str, timeout: float) -> None:
        """The claim's PV event is on another connection than its Bound one: it may be read a moment after."""
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.volume_made, timeout):
                raise TimeoutError(f"the PV of claim {name} was not seen in {timeout:g} s")

    def wait_bound(self, names: list[str], timeout: float, progress: Callable[[int], None] | None = None) -> None:
        wanted = set(names)
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + PROGRESS_EVERY_S if progress else deadline
        with self.cond:
            while not wanted <= self.bound.keys():
                now = time.monotonic()
                if now >= deadline:
                    missing = sorted(wanted - self.bound.keys())
                    raise TimeoutError(f"{len(missing)} of {len(wanted)} claims not Bound after {timeout:g} s "
                                       f"(e.g. {missing[:5]}); {len(wanted & self.held.keys())} were taken on by "
                                       "the provisioner")
                if progress and now >= next_report:
                    progress(len(wanted & self.bound.keys()))
                    next_report = now + PROGRESS_EVERY_S
                self.cond.wait(min(deadline, next_report) - now)


class _Expired(Exception):
    pass


# --- the run --------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, kube: KubeApi, robin_url: str, token: str, run_id: str):
        self.args, self.kube, self.robin_url, self.token = args, kube, robin_url, token
        self.namespace = f"bench-prov-{run_id}"
        self.project = self.namespace  # the provisioner's default: the namespace's name
        self.storage_class = f"bench-prov-{run_id}-{args.kind}"
        self.kind = args.kind
        self.claims_path = f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims"
        self.created: list[str] = []  # every claim this run created
        self.volumes_url = f"{robin_url}/api/v2/projects/{self.project}/{COLLECTIONS[self.kind]}"

    # setup

    def set_up(self, total_claims: int) -> None:
        self.kube.create("/api/v1/namespaces", {"metadata": {"name": self.namespace}})
        self.kube.create("/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": self.storage_class},
            "provisioner": PROVISIONERS[self.kind], "parameters": CLASS_PARAMETERS[self.kind],
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})
        # The project first, with room for every claim: quota never refuses (the provisioner would otherwise
        # make it with its default quota of 100 volumes).
        response = new_session(self.token).post(f"{self.robin_url}/api/v2/projects", timeout=HTTP_TIMEOUT_S, json={
            "name": self.project, "quota": {"max_bytes": 2 * total_claims * CLAIM_BYTES,
                                            "max_volumes": 2 * total_claims, "max_snapshots": 0}})
        if response.status_code != 201:
            raise RuntimeError(f"creating project {self.project}: {response.status_code} {response.text[:500]}")

    def claim_body(self, name: str) -> bytes:
        return json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": name, "namespace": self.namespace},
                           "spec": {"storageClassName": self.storage_class, "accessModes": ["ReadWriteOnce"],
                                    "resources": {"requests": {"storage": CLAIM_SIZE}}}}).encode()

    # creating claims

    def create_at_once(self, names: list[str], threads: int) -> dict[str, tuple[float, float]]:
        """{name: (create sent, create returned)}, from `threads` threads."""
        bodies = {name: self.claim_body(name) for name in names}

        def create(name: str) -> tuple[str, float, float]:
            started = time.perf_counter()
            self.kube.create(self.claims_path, bodies[name])
            return name, started, time.perf_counter()

        self.created.extend(names)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return {name: (started, returned) for name, started, returned in pool.map(create, names)}

    def burst(self, watch: ClaimWatch, prefix: str, n: int, progress: bool) -> dict:
        names = [f"{prefix}-{i:05d}" for i in range(n)]
        times = self.create_at_once(names, self.args.client_threads)
        first_sent = min(sent for sent, _ in times.values())
        last_returned = max(returned for _, returned in times.values())
        if progress:
            print(f"{n} creates returned in {last_returned - first_sent:.2f} s; waiting for Bound", flush=True)

        def report(bound: int) -> None:
            print(f"  {time.perf_counter() - first_sent:6.1f} s: {bound}/{n} Bound, load {os.getloadavg()[0]:.2f}",
                  flush=True)

        watch.wait_bound(names, self.args.timeout, report if progress else None)
        last_bound = max(watch.bound[name] for name in names)
        wall = last_bound - first_sent
        return {"n": n, "client_threads": self.args.client_threads,
                "creates_s": last_returned - first_sent, "creates_per_s": n / (last_returned - first_sent),
                "first_create_to_last_bound_s": wall, "pvcs_per_s": n / wall,
                "create_call": dist_ms([returned - sent for sent, returned in times.values()]),
                "create_to_bound": dist_ms([watch.bound[name] - times[name][1] for name in names]),
                "create_to_held": dist_ms([watch.held[name] - times[name][1] for name in names]),
                "held_to_bound": dist_ms([watch.bound[name] - watch.held[name] for name in names])}

    def one_at_a_time(self, watch: ClaimWatch, prefix: str, n: int) -> dict:
        returned, started = {}, time.perf_counter()
        for i in range(n):
            name = f"{prefix}-{i:05d}"
            self.created.append(name)
            self.kube.create(self.claims_path, self.claim_body(name))
            returned[name] = time.perf_counter()
            watch.wait_bound([name], self.args.timeout)
            watch.wait_volume_seen(name, self.args.timeout)
        wall = time.perf_counter() - started

        def stage(since: Callable[[str], float], until: Callable[[str], float]) -> dict:
            return dist_ms([until(name) - since(name) for name in returned])

        return {"n": n, "wall_s": wall, "pvcs_per_s": n / wall,
                "create_to_bound": stage(returned.get, watch.bound.get),
                "create_to_held": stage(returned.get, watch.held.get),
                "stages": {"create returned -> asked of the provisioner (the PV controller's annotation)":
                           stage(returned.get, watch.asked.get),
                           "asked -> taken on (the provisioner's finalizer and annotation)":
                           stage(watch.asked.get, watch.held.get),
                           "taken on -> PV seen (robin's create, the PV's create)":
                           stage(watch.held.get, watch.volume_made.get),
                           "PV seen -> claim seen Bound (the PV controller's binding)":
                           stage(watch.volume_made.get, watch.bound.get)}}

    # checks and cleanup

    def robin_volumes(self) -> list[str]:
        session, names, cursor = new_session(self.token), [], None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            response = session.get(self.volumes_url, params=params, timeout=HTTP_TIMEOUT_S)
            response.raise_for_status()
            body = response.json()
            names += [item["name"] for item in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                return names

    def check(self, ioctx) -> dict:
        claims = self.kube.get(self.kube.session(), self.claims_path)["items"]
        not_bound = sorted(c["metadata"]["name"] for c in claims if (c.get("status") or {}).get("phase") != "Bound")
        claim_volumes = {c["spec"].get("volumeName") for c in claims}
        volumes = self.robin_volumes()
        usage = new_session(self.token).get(f"{self.robin_url}/api/v2/projects/{self.project}/usage",
                                            timeout=HTTP_TIMEOUT_S).json()
        result = {"claims": len(claims), "claims_created": len(self.created), "claims_not_bound": len(not_bound),
                  "robin_volumes": len(volumes), "robin_usage_volumes": usage.get("volumes"),
                  "volumes_match_claims": set(volumes) == claim_volumes and len(volumes) == len(claims)}
        if self.kind == "rbd":
            result["missing_in_ceph"] = len(set(volumes) - set(rbd.RBD().list(ioctx)))
        result["ok"] = (not not_bound and len(claims) == len(self.created) == len(volumes)
                        == result["robin_usage_volumes"] and result["volumes_match_claims"]
                        and not result.get("missing_in_ceph"))
        if not_bound:
            result["not_bound_examples"] = not_bound[:10]
        return result

    def purge_volumes(self, conn: CephConnection, ioctx, fs, cleanup: dict) -> None:
        """robin's volumes of this run, removed at once (`?purge=true`); then what Ceph may still hold of a
        claim's volume is removed directly. Runs after the provisioner has stopped."""
        try:
            self._purge_volumes(conn, ioctx, fs, cleanup)
        except Exception as exc:
            cleanup["error"] = repr(exc)
            print(f"cleanup of robin's volumes failed: {exc!r}", file=sys.stderr)
            raise

    def _purge_volumes(self, conn: CephConnection, ioctx, fs, cleanup: dict) -> None:
        names = self.robin_volumes()
        local = threading.local()
        failures: list[str] = []

        def purge(name: str) -> None:
            if not hasattr(local, "session"):
                local.session = new_session(self.token)
            response = local.session.delete(f"{self.volumes_url}/{name}", params={"purge": "true"},
                                            timeout=HTTP_TIMEOUT_S)
            if response.status_code not in (204, 404):
                failures.append(f"{name}: {response.status_code} {response.text[:200]}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(purge, names))
        cleanup["robin_volumes_purged"] = len(names) - len(failures)
        cleanup["purge_failures"] = failures[:10]
        left = self.robin_volumes()
        cleanup["robin_volumes_left"] = len(left)
        if self.kind == "rbd":
            # A claim's volume is pvc-<claim uid>: any such image or owner mark still in the pool is ours.
            claims = self.kube.get(self.kube.session(), self.claims_path)["items"]
            ours = {f"pvc-{c['metadata']['uid']}" for c in claims}
            in_pool = ours & set(rbd.RBD().list(ioctx))
            marked = {name for name in ours - in_pool if rbd_ops.image_owner(conn, POOL, name) is not None}
            for name in sorted(in_pool | marked):
                rbd_ops.remove_image(conn, POOL, name, CLAIM_BYTES)  # idempotent; also forgets robin's owner mark
            cleanup["images_removed_directly"] = len(in_pool)
            cleanup["owner_marks_removed_directly"] = len(marked)
        elif fs is not None:
            remove_empty_dirs(fs, [f"{Settings().cephfs_root}/{self.project}"])


# --- the raw binding call -------------------------------------------------------------------------

class RawCreate:
    """The bare binding call a script would make for one volume: `RBD().create` with robin's default features,
    or for CephFS `mkdir` + the quota xattr; on one connection (one mount), shared by the threads."""

    def __init__(self, kind: str, ioctx, fs, run_id: str):
        self.kind, self.ioctx, self.fs = kind, ioctx, fs
        self.features = rbd_ops.feature_mask(Settings().rbd_default_features)
        self.parent = f"/bench-prov-{run_id}-raw"
        self.made: list[str] = []
        if kind == "cephfs":
            fs.mkdirs(self.parent, 0o755)

    def create(self, name: str) -> float:
        started = time.perf_counter()
        if self.kind == "rbd":
            rbd.RBD().create(self.ioctx, name, CLAIM_BYTES, old_format=False, features=self.features)
        else:
            path = f"{self.parent}/{name}"
            self.fs.mkdir(path, 0o755)
            self.fs.setxattr(path, QUOTA_XATTR, str(CLAIM_BYTES).encode(), 0)
        elapsed = time.perf_counter() - started
        self.made.append(name)
        return elapsed

    def remove_all(self) -> None:
        def remove(name: str) -> None:
            if self.kind == "rbd":
                rbd.RBD().remove(self.ioctx, name)
            else:
                self.fs.rmdir(f"{self.parent}/{name}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(remove, self.made))
        self.made.clear()
        if self.kind == "cephfs":
            remove_empty_dirs(self.fs, [self.parent])


def raw_baseline(raw: RawCreate, prefix: str, sequential: int, parallel: int, threads: int) -> dict:
    try:
        for i in range(RAW_WARMUP):  # untimed: the first calls of the connection
            raw.create(f"{prefix}-warm{i}")
        result = {}
        if sequential:
            started = time.perf_counter()
            seconds = [raw.create(f"{prefix}-s{i:05d}") for i in range(sequential)]
            wall = time.perf_counter() - started
            result["sequential"] = {"n": sequential, "wall_s": wall, "per_s": sequential / wall, **dist_ms(seconds)}
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            seconds = list(pool.map(raw.create, [f"{prefix}-p{i:05d}" for i in range(parallel)]))
        wall = time.perf_counter() - started
        result["parallel"] = {"n": parallel, "threads": threads, "wall_s": wall, "per_s": parallel / wall,
                              **dist_ms(seconds)}
        return result
    finally:
        raw.remove_all()


# --- reporting ----------------------------------------------------------------------------------

def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def row(label: str, n: int, wall: float, per_s: float, dist: dict) -> str:
    return (f"| {label} | {n} | {wall:.2f} | {per_s:.1f} | {fmt(dist['p50_ms'])} | {fmt(dist['p90_ms'])} "
            f"| {fmt(dist['p99_ms'])} | {fmt(dist['max_ms'])} |")


def ms_or_dash(value: float | None) -> str:
    return "-" if value is None else fmt(value)


def markdown(report: dict) -> str:
    s, burst, seq, raw = report["settings"], report["burst"], report.get("sequential"), report["raw"]
    noun = "`RBD().create`" if s["kind"] == "rbd" else "`mkdir` + quota xattr"
    lines = [f"PVCs of {s['claim_size']} in a `{s['provisioner']}` class; provisioner: {s['provisioner_workers']} "
             f"workers, qps/burst {s['qps']:g}/{s['burst']}, leader election {'on' if s['leader_elect'] else 'off'}; "
             f"robin serve: {s['robin_workers']} gunicorn workers; times in ms:", "",
             "| run | n | wall s | per second | p50 | p90 | p99 | max |", "|---|---:|---:|---:|---:|---:|---:|---:|",
             row(f"burst: PVC created -> Bound ({burst['client_threads']} client threads; wall = first create "
                 "to last Bound)", burst["n"], burst["first_create_to_last_bound_s"], burst["pvcs_per_s"],
                 burst["create_to_bound"])]
    if seq:
        lines.append(row("one at a time: PVC created -> Bound", seq["n"], seq["wall_s"], seq["pvcs_per_s"],
                         seq["create_to_bound"]))
    if "sequential" in raw:
        r = raw["sequential"]
        lines.append(row(f"raw {noun}, one at a time", r["n"], r["wall_s"], r["per_s"], r))
    r = raw["parallel"]
    lines.append(row(f"raw {noun}, {r['threads']} threads at once", r["n"], r["wall_s"], r["per_s"], r))
    goals = report["goals"]
    one = (f" p50 create-to-Bound one at a time at most {GOAL_ONE_AT_A_TIME_P50_MS:g} ms: "
           f"{verdict(goals['p50_one_at_a_time_met'])} ({fmt(seq['create_to_bound']['p50_ms'])} ms).") if seq else ""
    lines += ["", f"Goals: {GOAL_PVCS_PER_S:g} PVCs/s or more (burst): {verdict(goals['pvcs_per_s_met'])} "
                  f"({burst['pvcs_per_s']:.1f}/s, {burst['pvcs_per_s'] / r['per_s']:.2f}x the raw {r['threads']}-"
                  f"thread rate; the burst's p50 create-to-Bound, {fmt(burst['create_to_bound']['p50_ms'])} ms, "
                  f"includes waiting for half the queue ahead).{one} For scale: {CEPH_CSI}."]
    lines += ["", "Where a claim's time went (ms; \"taken on\" = first seen annotated `robin.io/volume`, the "
                  "provisioner's first write):", "",
              "| stage | p50 | p90 | p99 | max |", "|---|---:|---:|---:|---:|"]
    stages = [("burst: PVC create call (client side)", burst["create_call"]),
              ("burst: create returned -> taken on", burst["create_to_held"]),
              ("burst: taken on -> Bound", burst["held_to_bound"])]
    if seq:
        stages += [("one at a time: create returned -> taken on", seq["create_to_held"])]
        stages += [(f"one at a time: {label}", dist) for label, dist in seq.get("stages", {}).items()]
    for label, dist in stages:
        lines.append(f"| {label} | {fmt(dist['p50_ms'])} | {fmt(dist['p90_ms'])} | {fmt(dist['p99_ms'])} "
                     f"| {fmt(dist['max_ms'])} |")
    lines += ["", "Their own metrics (deltas over the phase; p50/p99 estimated from the buckets):", "",
              "| phase | metric | count | mean ms | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    for phase in ("burst", "sequential"):
        found = report.get("internals", {}).get(phase)
        if not found:
            continue
        label = "burst" if phase == "burst" else "one at a time"
        steps = found.get("provisioning_steps", {})  # absent from a provisioner older than the metric
        metrics = [("provisioner: first seen -> PV created", found["provisioning"]),
                   *((f"provisioner: step {STEP_LABELS[step]}", summary) for step, summary in steps.items()
                     if summary["count"]),
                   (f"robin: `POST .../{COLLECTIONS[s['kind']]}` (server side)", found["robin_create_request"]),
                   *((f"robin: Ceph `{op}`", summary) for op, summary in found["robin_ceph_ops"].items())]
        for name, summary in metrics:
            lines.append(f"| {label} | {name} | {summary['count']} | {ms_or_dash(summary['mean_ms'])} "
                         f"| {ms_or_dash(summary['p50_estimate_ms'])} | {ms_or_dash(summary['p99_estimate_ms'])} |")
    moved = {phase: report.get("internals", {}).get(phase, {}).get("provisioner_counters", {})
             for phase in ("burst", "sequential")}
    lines += ["", "Provisioner counters (burst / one at a time): " + "; ".join(
        f"{phase}: " + (", ".join(f"`{k}` {v:g}" for k, v in values.items()) or "none")
        for phase, values in moved.items())]
    calls = {phase: report.get("internals", {}).get(phase, {}).get("robin_requests", {})
             for phase in ("burst", "sequential")}
    lines += ["", "robin API calls, by route and status: " + "; ".join(
        f"{phase}: " + (", ".join(f"`{k}` {v}" for k, v in values.items()) or "none")
        for phase, values in calls.items())]
    cpu = report.get("cpu_burst")
    if cpu:
        lines += ["", f"CPU during the burst ({cpu['wall_s']:.1f} s, {report['machine']['cores']} cores, machine "
                      f"{cpu['machine_busy_fraction'] * 100:.0f}% busy):", "",
                  "| process | CPU s | cores used | CPU ms per PVC |", "|---|---:|---:|---:|"]
        for name, part in cpu["parts"].items():
            count = f" ({part['processes']})" if part["processes"] else ""
            lines.append(f"| {name}{count} | {part['cpu_s']:.1f} | {part['cores']:.2f} "
                         f"| {part['cpu_s'] / burst['n'] * 1000:.1f} |")
    check = report["check"]
    lines += ["", f"Check: {check['claims']} claims (provisioned, by the provisioner's count: "
                  f"{check['provisioned_ok_total']:g}), {check['claims_not_bound']} not Bound, "
                  f"{check['robin_volumes']} robin volumes (usage says {check['robin_usage_volumes']}), names match: "
                  f"{check['volumes_match_claims']}" + (f", missing in Ceph: {check['missing_in_ceph']}"
                                                        if "missing_in_ceph" in check else "")
              + f": {'ok' if check['ok'] else 'FAILED'}."]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=1000, help="PVCs created at once (the burst)")
    parser.add_argument("--sequential", type=int, default=100, help="PVCs created one at a time, each once the "
                                                                     "previous one is Bound (0: none)")
    parser.add_argument("--warmup", type=int, default=8, help="PVCs created at once and bound before the burst, "
                                                              "untimed (first connections, caches)")
    parser.add_argument("--kind", choices=sorted(PROVISIONERS), default="rbd", help="robin.io/rbd or robin.io/cephfs")
    parser.add_argument("--workers", type=int, default=4, help="robin serve's gunicorn workers")
    parser.add_argument("--provisioner-workers", type=int, default=8, help="the provisioner's --workers")
    parser.add_argument("--qps", type=float, default=1000.0, help="the provisioner's --qps (high: no throttling)")
    parser.add_argument("--burst", type=int, default=1000, help="the provisioner's --burst")
    parser.add_argument("--leader-elect", action="store_true",
                        help="run the provisioner with leader election (default: --no-leader-elect)")
    parser.add_argument("--client-threads", type=int, default=16, help="threads creating the burst's PVCs")
    parser.add_argument("--raw-threads", type=int, default=8, help="threads of the parallel raw baseline")
    parser.add_argument("--history-size", type=int, default=50000, help="the test API server's watch history")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for all claims to be Bound")
    parser.add_argument("--ceph-conf", help="use this cluster instead of starting a dev cluster")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--py-spy", type=Path, metavar="PATH",
                        help="record the provisioner's Python CPU during the burst with py-spy (collapsed stacks of "
                             "the thread holding the GIL) into PATH; py-spy takes CPU of the same cores, so such a "
                             "run's figures are not comparable")
    args = parser.parse_args(argv)
    if min(args.claims, args.workers, args.provisioner_workers, args.client_threads, args.raw_threads,
           args.burst) < 1 or args.qps <= 0 or args.sequential < 0 or args.warmup < 0:
        parser.error("--claims, --workers, --provisioner-workers, --client-threads, --raw-threads, --qps and "
                     "--burst must be positive; --sequential and --warmup not negative")
    return args




def run(args, report: dict, stack: ExitStack) -> None:
    run_id = uuid.uuid4().hex[:6]
    directory = Path(tempfile.mkdtemp(prefix="robin-bench-prov-"))  # logs and the kubeconfig: left for a look
    print(f"logs: {directory}", flush=True)
    conf = start_cluster(stack, args.ceph_conf)
    database_url = make_database(stack)
    token = make_admin_token(database_url, conf)
    ioctx = stack.enter_context(rados_ioctx(conf))
    conn = CephConnection("bench", {"conf_path": conf, "client_id": "admin"}, Settings().ceph_timeout)
    stack.callback(conn.close)
    fs = mount_cephfs(stack, conf) if args.kind == "cephfs" else None
    robin_url = stack.enter_context(running_server(database_url, conf, workers=args.workers,
                                                   extra_env={"PYTHONPATH": str(REPO)}))
    kube, kube_process = start_kube_apiserver(stack, args.history_size, directory,
                                               report["cleanup"].setdefault("exit_codes", {}))
    bench = Bench(args, kube, robin_url, token, run_id)
    total = args.warmup + args.claims + args.sequential
    bench.set_up(total)
    # Registered before the provisioner starts, so it runs after the provisioner has stopped.
    stack.callback(bench.purge_volumes, conn, ioctx, fs, report["cleanup"])
    watch = ClaimWatch(kube, bench.namespace, bench.project)
    watch.start()
    stack.callback(watch.stop)
    provisioner, metrics_url = start_provisioner(stack, args, kube, robin_url, token, directory,
                                                 report["cleanup"].setdefault("exit_codes", {}))
    # What the servers loaded (all but lazy imports): others edit this tree while benchmarks run.
    report["processes_started"] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "robin_source": source_hash("robin", "migrations"),
                                   "kube_apiserver_source": source_hash("tests/kube_apiserver")}
    robin_metrics = f"{robin_url}/metrics"
    server_port = robin_url.rsplit(":", 1)[1].encode()
    ceph_run = Path(conf).resolve().parent / "run"
    cpu = CpuMeter({
        "test kube-apiserver": lambda: [kube_process.pid],
        "robin provisioner": lambda: [provisioner.pid],
        "robin serve (gunicorn)": lambda: pids_with(b"gunicorn", b"127.0.0.1:" + server_port),
        "Ceph daemons": lambda: ceph_pids(ceph_run, conf),
        "this benchmark (client, watch, raw calls)": lambda: [os.getpid()]})

    if args.warmup:
        print(f"warm-up: {args.warmup} PVCs", flush=True)
        bench.burst(watch, f"warm-{run_id}", args.warmup, progress=False)
        provisioner_caught_up(metrics_url, {}, args.warmup)
    print(f"burst: {args.claims} PVCs at once", flush=True)
    with profiled(args.py_spy, provisioner.pid):
        before = (scrape(metrics_url), scrape(robin_metrics, token), cpu.snapshot())
        report["burst"] = bench.burst(watch, f"burst-{run_id}", args.claims, progress=True)
        after = (provisioner_caught_up(metrics_url, before[0], args.claims), scrape(robin_metrics, token),
                 cpu.snapshot())
    report["cpu_burst"] = CpuMeter.between(before[2], after[2])
    report["internals"] = {"burst": internals(delta(before[0], after[0]), delta(before[1], after[1]), args.kind)}
    if args.sequential:
        print(f"one at a time: {args.sequential} PVCs", flush=True)
        report["sequential"] = bench.one_at_a_time(watch, f"seq-{run_id}", args.sequential)
        end = (provisioner_caught_up(metrics_url, after[0], args.sequential), scrape(robin_metrics, token),
               cpu.snapshot())
        report["cpu_sequential"] = CpuMeter.between(after[2], end[2])
        report["internals"]["sequential"] = internals(delta(after[0], end[0]), delta(after[1], end[1]), args.kind)
    report["watch"] = {"events": watch.events, "restarts": watch.restarts, "relists": watch.relists}
    report["check"] = bench.check(ioctx)
    # More than one success per claim would mean a claim was provisioned twice (robin's create then answers
    # name_taken, the PV create 409: see robin_requests).
    report["check"]["provisioned_ok_total"] = scrape(metrics_url).get(PROVISIONED_OK, 0.0)
    report["provisioner_log_warnings"] = sum('"level": "warning"' in line or '"level": "error"' in line
                                             for line in provisioner.log_path.read_text(errors="replace").splitlines())
    print(f"raw baseline: {args.sequential} one at a time, {args.claims} from {args.raw_threads} threads", flush=True)
    report["raw"] = raw_baseline(RawCreate(args.kind, ioctx, fs, run_id), f"raw-{run_id}", args.sequential,
                                 args.claims, args.raw_threads)


@contextmanager
def profiled(output: Path | None, pid: int):
    """py-spy recording `pid`'s threads into `output` (collapsed stacks) while the block runs; nothing without
    `output`. Stopped by its own pid (SIGINT: it then writes the file)."""
    if output is None:
        yield
        return
    argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", "200", "--format",
            "raw", "--threads", "--gil", "--output", str(output)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attached before the first claim
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(STOP_TIMEOUT_S)


def provisioner_caught_up(metrics_url: str, before: dict, n: int, timeout: float = 10.0) -> dict:
    """The provisioner's metrics once it has counted `n` more provisionings than in `before`: the watch may see a
    claim Bound (the PV controller binds when the PV is created) just before the provisioner records it."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(metrics_url)
        if samples.get(PROVISIONED_OK, 0.0) - before.get(PROVISIONED_OK, 0.0) >= n or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def ceph_pids(run_dir: Path, conf: str) -> list[int]:
    """The daemons of the cluster whose ceph.conf this is, by the pid files next to it (a dev cluster's)."""
    pids = []
    for pid_file in run_dir.glob("*.pid"):
        try:
            pid = int(pid_file.read_text())
            if conf.encode() in Path(f"/proc/{pid}/cmdline").read_bytes() or \
                    str(Path(conf).resolve()).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except (OSError, ValueError):
            continue
    return pids


def main(argv=None) -> int:
    args = parse_args(argv)
    # `git status` must not take the index lock: others commit in this tree while benchmarks run.
    os.environ["GIT_OPTIONAL_LOCKS"] = "0"
    stop_cleanly_on_signals()
    report = {"machine": {**machine(), "kube_apiserver_source": source_hash("tests/kube_apiserver"),
                          "load_average_start": os.getloadavg()},
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"claims": args.claims, "sequential": args.sequential, "warmup": args.warmup,
                           "kind": args.kind, "provisioner": PROVISIONERS[args.kind], "claim_size": CLAIM_SIZE,
                           "robin_workers": args.workers, "robin_threads_per_worker": Settings().threads,
                           "provisioner_workers": args.provisioner_workers, "qps": args.qps, "burst": args.burst,
                           "leader_elect": args.leader_elect, "client_threads": args.client_threads,
                           "raw_threads": args.raw_threads, "history_size": args.history_size,
                           "features": list(Settings().rbd_default_features), "database": "sqlite"},
              "cleanup": {}}
    with ExitStack() as stack:
        run(args, report, stack)
    report["at_end"] = {**git_state(), "kube_apiserver_source": source_hash("tests/kube_apiserver"),
                        "load_average_end": os.getloadavg()}
    burst = report["burst"]
    report["goals"] = {"pvcs_per_s": GOAL_PVCS_PER_S, "one_at_a_time_p50_ms": GOAL_ONE_AT_A_TIME_P50_MS,
                       "pvcs_per_s_met": burst["pvcs_per_s"] >= GOAL_PVCS_PER_S}
    if report.get("sequential"):
        report["goals"]["p50_one_at_a_time_met"] = (report["sequential"]["create_to_bound"]["p50_ms"]
                                                    <= GOAL_ONE_AT_A_TIME_P50_MS)
    print("\n" + markdown(report), flush=True)
    print(f"\ncleanup: {json.dumps(report['cleanup'])}")
    for key in ("robin_source", "kube_apiserver_source"):
        seen = [report["machine"][key], report["processes_started"][key], report["at_end"][key]]
        if len(set(seen)) > 1:
            print(f"\nWARNING: {key} changed during the run (at start, once the servers were up, at the end: "
                  f"{' -> '.join(seen)}): the processes may have run different code", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0 if report["check"]["ok"] else 1


if __name__ == "__main__":
    run_main(main)
