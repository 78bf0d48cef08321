"""Copy throughput of `robin migrate gluster` against `cp -a`, between the same two mounts, in the same run.

One run starts its own dev Ceph cluster, a private GlusterFS server (tests/support/gluster.py: glusterd on
127.0.0.1, a one-brick volume), a migrated SQLite database and `robin serve`; then for each data set:

  small   --small-files files of 2-16 KiB in 100 directories (metadata-bound: round trips per file)
  large   --large-files files of --large-mib MiB each, random bytes (data-bound)
  acl     --acl-files files of 2-16 KiB in 20 directories, each file with a `user.*` xattr and an access ACL
          (a named user and group, a mask narrower than the group bits), each directory with a default ACL
  issue   issue 18's own case: 3,024 files, 759 MiB (--issue-mib): 3,000 files of 2-64 KiB in 60 directories
          and 24 files of 8-48 MiB making up the rest, random bytes

it writes the set into a GlusterFS volume, creates a CephFS volume through robin's API and mounts it as the tool
does (robin.mounts, the CSI node's staging: ceph-fuse at the path), and times, --repeats times each, interleaved
with the order rotating, each copy into a fresh directory of that same destination mount:

  cp -a           `cp -a SRC/. DST/run-N/` (coreutils, one file at a time: content, modes, owners, times, links,
                  extended attributes and ACLs, which robin keeps too)
  robin p=N       robin's copy engine (robin.migrate.copy: scan, then N files at a time) for each N in --parallel
  robin p=N + verify   the engine's copy, each MiB read back from the destination once written and compared
                  with what was read, then the verification (robin.migrate.verify: every entry and attribute
                  compared, the content of every file the copy did not compare by both sides' SHA-256), for the
                  largest N: what `robin migrate gluster` does with a volume once it is mounted

The GlusterFS source is mounted afresh (read-only, as the tool does) before every copy, so no copy reads from a
cache another one filled. A copy's time ends when its data is flushed (cp: `sync -f` on the destination; robin's
engine flushes with syncfs itself). Then one whole `robin migrate gluster` run (plan, create, mount, copy, verify
every checksum) is timed per set, --whole-repeats times. With --before PATH (an unpacked `git archive` of another
commit), that commit's engine (its robin/migrate/copy.py and verify.py, loaded beside this one's) is one more
contender, `before p=N + verify`, and its `robin migrate gluster` is timed too, alternating with this one's, on
the same servers. Beside each time, the copier's own CPU seconds (robin's threads, or cp's and sync's): what the
FUSE daemons do is in neither, and the load moves it far less than it moves the times.

    .venv/bin/python benchmarks/migrate.py [--repeats 3] [--small-files 4000] [--large-files 4] [--large-mib 256]
        [--acl-files 2000] [--issue-mib 759] [--sets small,large,acl,issue] [--parallel 1,8] [--whole-repeats 1]
        [--before PATH] [--json out.json]

Everything it starts is stopped by pid in `finally`, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.api_vs_binding import (  # noqa: E402
    create_project,
    git_state,
    machine,
    make_admin_token,
    make_database,
    run_main,
    start_cluster,
    stop_cleanly_on_signals,
)
from robin.client import ClientConfig, RobinClient, VolumeRef  # noqa: E402
from robin.migrate import destination, gluster  # noqa: E402
from robin.migrate.copy import Copier  # noqa: E402
from robin.migrate.tree import scan  # noqa: E402
from robin.migrate.verify import verify  # noqa: E402
from robin.mounts import Host  # noqa: E402
from tests.support.gluster import GlusterServer  # noqa: E402
from tests.support.server import running_server  # noqa: E402

MiB = 2**20
SETS = ("small", "large", "acl", "issue")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=4000)
    parser.add_argument("--large-files", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--acl-files", type=int, default=2000)
    parser.add_argument("--issue-mib", type=int, default=759, help="the issue set's total size")
    parser.add_argument("--sets", default=",".join(SETS), help="which sets, comma separated")
    parser.add_argument("--parallel", default="1,8", help="robin's files in flight, comma separated")
    parser.add_argument("--whole-repeats", type=int, default=1, help="whole `robin migrate gluster` runs per set")
    parser.add_argument("--before", help="an unpacked git archive of another commit, whose whole runs alternate "
                                         "with this one's")
    parser.add_argument("--json", help="write the results there too")
    return parser.parse_args(argv)


def fill_small(root: Path, count: int) -> None:
    rng = random.Random(1)
    for i in range(count):
        folder = root / f"dir-{i % 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"file-{i:06d}").write_bytes(rng.randbytes(rng.randint(2048, 16384)))


def fill_large(root: Path, count: int, mib: int) -> None:
    for i in range(count):
        with open(root / f"blob-{i}", "wb") as handle:
            for _ in range(mib):
                handle.write(os.urandom(MiB))


def acl(*named: tuple[int, int, int], mask: int) -> bytes:
    """A POSIX ACL's raw value (system.posix_acl_*): owner rw-, owning group rw-, `named` (tag, id, perms), the
    mask, other r--."""
    entries = [(0x01, 0xFFFFFFFF, 6), (0x04, 0xFFFFFFFF, 6), *((tag, ident, perm) for tag, perm, ident in named),
               (0x10, 0xFFFFFFFF, mask), (0x20, 0xFFFFFFFF, 4)]
    # The kernel takes entries in (tag, id) order only.
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident)
                                           for tag, ident, perm in sorted(entries))


def fill_attributed(root: Path, count: int) -> None:
    rng = random.Random(2)
    default = acl((0x02, 7, 1001), (0x08, 5, 1002), mask=7)
    for i in range(count):
        folder = root / f"dir-{i % 20:02d}"
        if not folder.exists():
            folder.mkdir()
            os.setxattr(folder, "system.posix_acl_default", default)
        path = folder / f"file-{i:06d}"
        path.write_bytes(rng.randbytes(rng.randint(2048, 16384)))
        os.setxattr(path, "user.origin", f"batch-{i % 7}".encode())
        os.setxattr(path, "system.posix_acl_access", acl((0x02, 6, 33), (0x08, 6, 44), mask=4))


ISSUE_SMALL_FILES, ISSUE_LARGE_FILES = 3000, 24


def fill_issue(root: Path, total_mib: int) -> None:
    """Issue 18's mix: many small files in directories, a few large ones holding most of the bytes."""
    rng = random.Random(3)
    small_bytes = 0
    for i in range(ISSUE_SMALL_FILES):
        folder = root / f"dir-{i % 60:02d}"
        folder.mkdir(exist_ok=True)
        data = rng.randbytes(rng.randint(2048, 65536))
        (folder / f"file-{i:05d}").write_bytes(data)
        small_bytes += len(data)
    weights = [rng.uniform(8, 48) for _ in range(ISSUE_LARGE_FILES)]
    left = max(0, total_mib * MiB - small_bytes)
    sizes = [int(left * weight / sum(weights)) for weight in weights]
    sizes[-1] += left - sum(sizes)  # the total exact
    (root / "media").mkdir()
    for i, size in enumerate(sizes):
        with open(root / "media" / f"blob-{i:02d}", "wb") as handle:
            for start in range(0, size, MiB):
                handle.write(os.urandom(min(MiB, size - start)))


def copy_with_cp(*options: str):
    def copy(source: str, target: str) -> None:
        os.mkdir(target)
        subprocess.run(["cp", *options, f"{source}/.", target], check=True)
        subprocess.run(["sync", "-f", target], check=True)
    return copy


def copy_with_robin(parallel: int):
    def copy(source: str, target: str) -> None:
        os.mkdir(target)
        stats = Copier(source, target, parallel).copy(scan(source))
        if stats.errors:
            raise RuntimeError(f"robin's copy failed: {stats.errors[:3]}")
    return copy


def copy_and_verify_with_robin(parallel: int, engine=None):
    """`engine`: (Copier, verify) of another tree (engine_of), else this one's."""
    copier_class, verify_tree = engine or (Copier, verify)

    def copy(source: str, target: str) -> None:
        os.mkdir(target)
        tree = scan(source)
        copier = copier_class(source, target, parallel, read_back=True)  # as `robin migrate gluster` copies
        stats = copier.copy(tree)
        verification = verify_tree(tree, target, copier.sources, copier.refused(), parallel)
        if stats.errors or stats.xattrs_refused or not verification.ok:
            raise RuntimeError(f"robin's copy failed: {stats.errors[:3]} {stats.xattrs_refused[:3]} "
                               f"{verification.mismatches[:3]}")
    return copy


def engine_of(tree: Path):
    """The Copier and verify() of another tree's robin/migrate/copy.py and verify.py, loaded beside this tree's
    under other module names (their other imports are this tree's modules): the engines A/B in one process."""
    def load(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    other_copy = load("robin.migrate.copy_before", tree / "robin/migrate/copy.py")
    ours = sys.modules["robin.migrate.copy"]
    sys.modules["robin.migrate.copy"] = other_copy  # what the other verify.py imports its Copied from
    try:
        other_verify = load("robin.migrate.verify_before", tree / "robin/migrate/verify.py")
    finally:
        sys.modules["robin.migrate.copy"] = ours
    return other_copy.Copier, other_verify.verify


def measure_set(name: str, fill, server: GlusterServer, client: RobinClient, host: Host, project: str,
                keyring_user: tuple[str, str], work: Path, args) -> dict:
    volume = server.create_volume(f"bench_{name}")
    with server.mount(volume) as root:
        fill(Path(root))
        files = sum(len(names) for _, _, names in os.walk(root))
        data_bytes = sum(entry.stat().st_size for entry in Path(root).rglob("*") if entry.is_file())
    ref = VolumeRef("cephfs", project, f"bench-{name}")
    made = client.create_volume("cephfs", project, ref.name, 64 * 2**30)
    access = destination.access(client, made["cluster"], *keyring_user)
    source_spec = gluster.GlusterSource((server.host,), volume)
    contenders = {"cp -a": copy_with_cp("-a"),
                  **{f"robin p={p}": copy_with_robin(p) for p in args.parallel},
                  f"robin p={max(args.parallel)} + verify": copy_and_verify_with_robin(max(args.parallel))}
    if args.before:
        contenders[f"before p={max(args.parallel)} + verify"] = copy_and_verify_with_robin(
            max(args.parallel), engine_of(Path(args.before).resolve()))
    samples: dict[str, list[float]] = {label: [] for label in contenders}
    cpu: dict[str, list[float]] = {label: [] for label in contenders}
    order = list(contenders)
    with destination.mounted(host, ref, made, access, str(work / f"dest-{name}")) as target:
        for repeat in range(args.repeats):
            for label in order[repeat % len(order):] + order[:repeat % len(order)]:
                run_dir = os.path.join(target, f"run-{repeat}-{len(samples[label])}-{abs(hash(label))}")
                with gluster.mounted(source_spec, str(work / f"src-{name}")) as source:
                    started, cpu_started = time.perf_counter(), copier_cpu_s()
                    contenders[label](source, run_dir)
                    samples[label].append(time.perf_counter() - started)
                    cpu[label].append(copier_cpu_s() - cpu_started)
                shutil.rmtree(run_dir)
                print(f"  {name} {label}: {samples[label][-1]:.2f}s, CPU {cpu[label][-1]:.2f}s, load "
                      f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return {"set": name, "files": files, "bytes": data_bytes, "gluster_volume": volume, "samples": samples,
            "cpu_s": cpu}


def copier_cpu_s() -> float:
    """CPU seconds of the copier itself, user and system: this process's threads (robin's engine) and its ended
    children (cp and sync, waited for within a copy's time); the FUSE daemons of both sides run in neither, and
    neither counts what the load takes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def whole_run(spec: str, url: str, token: str, conf: str, project: str, name: str, work: Path,
              tree: Path = REPO) -> dict:
    """One `robin migrate gluster` of `tree`'s robin (its package first on the path) into a new volume `name`."""
    env = {**os.environ, "ROBIN_URL": url, "ROBIN_TOKEN": token, "ROBIN_CEPH_CONF": conf,
           "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    # In `tree`: `python -m` puts the working directory ahead of PYTHONPATH, and another tree's robin there would
    # be the one that runs.
    done = subprocess.run([sys.executable, "-m", "robin.cli", "migrate", "gluster", spec, "--project", project,
                           "--name", name, "--json", "--work-dir", str(work)], env=env, capture_output=True,
                          text=True, check=False, cwd=tree)
    elapsed = time.perf_counter() - started
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"reports"')]
    if done.returncode != 0 or not reports:
        raise RuntimeError(f"robin migrate gluster failed ({done.returncode}): {done.stderr[-2000:]}")
    report = reports[0]["reports"][0]
    return {"total_s": elapsed, "copy_s": report["copy_s"], "verify_s": report["verify_s"],
            "status": report["status"]}


def table(results: list[dict]) -> str:
    lines = ["| set | files | MiB | contender | median s | MiB/s | files/s | vs cp -a | copier CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        baseline = statistics.median(result["samples"]["cp -a"])
        for label, samples in result["samples"].items():
            median = statistics.median(samples)
            lines.append(f"| {result['set']} | {result['files']:,} | {result['bytes'] / MiB:,.0f} | {label} | "
                         f"{median:.2f} | {result['bytes'] / MiB / median:,.1f} | {result['files'] / median:,.0f} | "
                         f"{baseline / median:.2f}x | {statistics.median(result['cpu_s'][label]):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.parallel = [int(p) for p in args.parallel.split(",")]
    args.sets = [name for name in args.sets.split(",") if name]
    unknown = set(args.sets) - set(SETS)
    if unknown:
        raise SystemExit(f"no such set: {', '.join(sorted(unknown))} (sets: {', '.join(SETS)})")
    stop_cleanly_on_signals()
    report = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]), **git_state()}
    with ExitStack() as stack:
        conf = start_cluster(stack, None)
        base = Path(tempfile.mkdtemp(prefix="rgb", dir="/tmp"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        server = GlusterServer(base / "gluster")
        stack.callback(server.stop)
        server.start()
        database = make_database(stack)
        token = make_admin_token(database, conf)
        url = stack.enter_context(running_server(database, conf, workers=2))
        project = "bench-migrate"
        create_project(url, token, project)
        client = RobinClient(ClientConfig(url=url, token=token))
        stack.callback(client.close)
        keyring = destination.default_keyring(conf, "admin")
        user_key = ("admin", destination.read_key(keyring, "admin"))
        host = Host(str(base / "state"), "rbd-fuse")
        fills = {"small": lambda root: fill_small(root, args.small_files),
                 "large": lambda root: fill_large(root, args.large_files, args.large_mib),
                 "acl": lambda root: fill_attributed(root, args.acl_files),
                 "issue": lambda root: fill_issue(root, args.issue_mib)}
        sets = [(name, fills[name]) for name in args.sets]
        trees = {"this": REPO, **({"before": Path(args.before).resolve()} if args.before else {})}
        report["results"] = []
        for name, fill in sets:
            result = measure_set(name, fill, server, client, host, project, user_key, base, args)
            spec = f"{server.host}:/{result['gluster_volume']}"
            result["whole_runs"] = {label: [] for label in trees}
            for repeat in range(args.whole_repeats):
                for label, tree in (list(trees.items())[::-1] if repeat % 2 else trees.items()):
                    volume_name = f"whole-{name}-{label}-{repeat}"
                    run = whole_run(spec, url, token, conf, project, volume_name,
                                    base / f"cli-{name}-{label}-{repeat}", tree)
                    client.delete_volume("cephfs", project, volume_name, purge=True)  # memstore: held in memory
                    result["whole_runs"][label].append(run)
                    print(f"  {name} whole run ({label}): {run['total_s']:.2f}s", file=sys.stderr, flush=True)
            report["results"].append(result)
    print(table(report["results"]))
    for result in report["results"]:
        for label, runs in result["whole_runs"].items():
            print(f"whole `robin migrate gluster` of {result['set']} ({label}): " + ", ".join(
                f"{run['total_s']:.1f}s (copy {run['copy_s']:.1f}s, verify {run['verify_s']:.1f}s, {run['status']})"
                for run in runs))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
