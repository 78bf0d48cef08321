"""`robin migrate gluster`: plan, then for each volume create the destination, copy, verify, record, and (for
Kubernetes volumes, on request) cut the claim over. Volumes are migrated one after another, each with a bounded
number of files in flight; a failure of one is reported and the next goes on.

Exit status: 0 when every volume was copied and verified, 1 when any failed or did not verify, 2 when the plan was
refused (nothing was created then)."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass

from robin import mounts
from robin.client import RobinApiError, RobinClient, VolumeRef
from robin.migrate import destination, gluster, locks, plan
from robin.migrate.copy import Copier
from robin.migrate.errors import MigrationError
from robin.migrate.progress import Progress
from robin.migrate.tree import Totals, scan
from robin.migrate.verify import verify
from robin.mounts import Host
from robin.units import human_bytes

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


@dataclass(frozen=True)
class Options:
    sources: tuple[str, ...] = ()
    pvs: tuple[str, ...] = ()
    all_pvs: bool = False
    project: str | None = None
    kind: str = "cephfs"
    name: str | None = None
    pool: str | None = None
    fs: str | None = None
    cluster: str | None = None
    headroom: float = 0.2
    parallel: int = 8
    checksum: bool = False
    dry_run: bool = False
    cutover: bool = False
    finalize: bool = False
    storage_class: str | None = None
    kubeconfig: str | None = None
    gluster_port: int = gluster.DEFAULT_PORT  # for PVs: Kubernetes mounts glusterd's default port, whatever the
    #                                           Endpoints object's port says
    work_dir: str = "/var/lib/robin/migrate"
    rbd_mounter: str = "rbd-fuse"
    fs_type: str = destination.RBD_FS_TYPE
    ceph_user: str = "admin"
    ceph_keyring: str = ""
    progress: bool = False
    as_json: bool = False
    report_path: str | None = None


class UsageError(Exception):
    """Options that do not make a migration: the command line says so and changes nothing."""


class Migration:
    def __init__(self, options: Options, client: RobinClient, kube=None, out=None):
        self.options, self.client, self.kube = options, client, kube
        self.out = out or sys.stdout
        self._node: Host | None = None
        self._locks: dict[str, int] = {}  # lock file -> its descriptor, held until the run ends
        self._made: set[str] = set()  # the work dir's volume directories this run made or used
        self._run = uuid.uuid4().hex  # names this run's records: its `started` one holds the destination in robin

    # --- the plan -----------------------------------------------------------------------------------------

    def plan(self) -> list[plan.PlanItem]:
        items = [self._plan_source(spec) for spec in self.options.sources]
        items += [self._plan_pv(gpv) for gpv in self._gluster_pvs()]
        names = [item.ref.handle for item in items]
        for item in items:
            if names.count(item.ref.handle) > 1:
                item.refuse("duplicate_destination", f"two sources would go into {item.ref.handle}")
        plan.check([item for item in items if item.ok], self.client)
        for item in items:
            if item.ok and item.exists:
                self._refuse_if_destination_in_use(item)
        return items

    def _plan_source(self, spec: str) -> plan.PlanItem:
        source = gluster.GlusterSource.parse(spec)
        if not self.options.project:
            raise UsageError(f"{spec}: say which robin project its volume goes into (--project)")
        name = self.options.name or plan.destination_name(source)
        return self._measure(str(source), source, VolumeRef(self.options.kind, self.options.project, name))

    def _plan_pv(self, gpv) -> plan.PlanItem:
        from robin.migrate.kubernetes import destination_name

        source = gluster.GlusterSource(tuple(gpv.servers), gpv.volume, gpv.subdir, self.options.gluster_port)
        if not gpv.project:
            raise UsageError(f"PV {gpv.name} is bound to no claim: migrate its volume as a GlusterFS source "
                             f"({','.join(gpv.servers)}:/{gpv.volume}) with --project")
        # The claim's namespace decides, as for every volume robin's provisioner and CSI driver make.
        ref = VolumeRef(self.options.kind, gpv.project, self.options.name or destination_name(gpv.name))
        item = self._measure(f"pv/{gpv.name}", source, ref, capacity=gpv.capacity_bytes, pv=gpv)
        if self.options.cutover:
            self._refuse_if_in_use(item, gpv)
        return item

    def _refuse_if_in_use(self, item: plan.PlanItem, gpv) -> None:
        """The copy before a cut-over must be the last one: nothing may write to the source meanwhile."""
        from robin.migrate.cutover import pods_using

        pods = pods_using(self.kube, gpv.claim_namespace, gpv.claim_name)
        if pods:
            item.refuse("claim_in_use", f"claim {gpv.claim_key} is used by pod(s) {', '.join(pods)}: scale the "
                                        f"workload down before the final copy and the cut-over")

    def _refuse_if_destination_in_use(self, item: plan.PlanItem) -> None:
        """A second writer beside a workload corrupts an RBD file system and races its files on CephFS: resume only
        into a destination nobody else uses."""
        ref, volume = item.ref, item.volume
        if mounts.mount_at(self._destination_path(ref)) is not None:
            return  # a killed run of this migration mounted it here; holding the lock, this run takes it over
        try:
            users = self._destination_users(ref, volume)
        except MigrationError as exc:
            item.refuse(exc.code, exc.message)
            return
        if users:
            item.refuse("destination_in_use", f"{ref.handle} is in use ({'; '.join(users)}): another writer beside "
                                              f"them would corrupt it. Nothing was changed; stop them (unmap, "
                                              f"deactivate, scale down), then run again")

    def _destination_users(self, ref: VolumeRef, volume: dict) -> list[str]:
        """The RBD image's watchers and lock owners (a node or the gateway that maps it) and, where Kubernetes is
        at hand, the pods of claims bound to the volume."""
        users = []
        if ref.kind == "rbd":
            ceph = destination.access(self.client, volume["cluster"], self.options.ceph_user, self._ceph_key())
            users += destination.rbd_users(ceph, volume["cluster"], volume)
        if self.kube is not None:
            from robin.kube.client import KubeError
            from robin.migrate.cutover import pods_using_volume

            try:
                users += [f"pod {pod}" for pod in pods_using_volume(self.kube, ref)]
            except KubeError as exc:
                raise MigrationError("destination_unchecked", f"cannot tell which pods use {ref.handle}: "
                                                              f"{exc.message}") from exc
        return users

    def _measure(self, label: str, source: gluster.GlusterSource, ref: VolumeRef, capacity: int | None = None,
                 pv=None) -> plan.PlanItem:
        item = plan.PlanItem(label, source, ref, Totals(), None, capacity, pv)
        busy = [what for what, key in ((ref.handle, f"destination-{ref.kind}-{ref.project}-{ref.name}"),
                                       (label, f"source-{hashlib.sha256(str(source).encode()).hexdigest()[:16]}"))
                if not self._lock(key)]
        if busy:
            item.refuse("migration_running", f"another run of robin migrate gluster is migrating {busy[0]} (work "
                                             f"dir {self.options.work_dir}): nothing was changed; run again once "
                                             f"it has ended")
            return item
        try:
            with gluster.mounted(source, self._work_dir(ref, "plan")) as root:
                item.totals = scan(root).totals
        except gluster.SourceError as exc:
            item.refuse(exc.code, exc.message)
            return item
        except OSError as exc:
            item.refuse("source_unreadable", f"{label}: {exc}")
            return item
        item.size_bytes = plan.size_for(ref.kind, item.totals, self.options.headroom, capacity)
        return item

    def _gluster_pvs(self) -> list:
        if not (self.options.pvs or self.options.all_pvs):
            return []
        from robin.migrate.kubernetes import gluster_pvs

        if self.options.pvs:
            return gluster_pvs(self.kube, list(self.options.pvs))
        found = gluster_pvs(self.kube, None)
        for gpv in found:
            if not gpv.project:
                print(f"skipping PV {gpv.name}: it is bound to no claim (migrate {','.join(gpv.servers)}:/"
                      f"{gpv.volume} as a GlusterFS source with --project)", file=sys.stderr)
        return [gpv for gpv in found if gpv.project]

    # --- the run -------------------------------------------------------------------------------------------

    def run(self) -> int:
        if self.options.finalize:
            return self._finalize()
        try:
            return self._plan_and_migrate()
        finally:
            self._tidy()

    def _plan_and_migrate(self) -> int:
        items = self.plan()
        self._print_plan(items)
        if not all(item.ok for item in items):
            for item in items:
                if not item.ok:
                    print(f"{item.refusal_code}: {item.refusal}", file=sys.stderr)
            return EXIT_REFUSED
        if self.options.dry_run:
            return EXIT_OK
        reports = [self.migrate(item) for item in items]
        self._print_reports(reports)
        statuses = {report["status"] for report in reports}
        if statuses <= {"verified", "cut-over"}:
            return EXIT_OK
        return EXIT_REFUSED if statuses <= {"verified", "cut-over", "refused"} else EXIT_FAILED

    def migrate(self, item: plan.PlanItem) -> dict:
        ref = item.ref
        report = {"source": item.label, "destination": {"kind": ref.kind, "project": ref.project, "name": ref.name,
                                                        "handle": ref.handle, "size_bytes": item.size_bytes}}
        started = time.monotonic()
        try:
            self._hold(item)
        except RobinApiError as exc:
            if exc.code != "migration_running":
                raise
            # No record of ours: the destination's latest record stays the other run's.
            return {**report, "status": "refused", "error": {"code": exc.code, "message": exc.explanation}}
        try:
            volume = self._ensure_volume(item)
            report.update(self._copy_and_verify(item, volume))
            report["status"] = "verified" if report["verification"]["ok"] and not report["copy"]["errors"] \
                else "mismatched"
        except MigrationError as exc:
            report.update(status="failed", error={"code": exc.code, "message": exc.message})
        except RobinApiError as exc:
            report.update(status="failed", error={"code": exc.code, "message": exc.explanation})
        except OSError as exc:
            report.update(status="failed", error={"code": "io_error", "message": str(exc)})
        report["duration_s"] = round(time.monotonic() - started, 3)
        self.client.record_migration(ref.project, item.label, ref.kind, ref.name, report["status"], report,
                                     run=self._run)
        if report["status"] == "verified" and self.options.cutover and item.pv is not None:
            report["cutover"] = self._cutover(item)
            report["status"] = "cut-over" if report["cutover"].get("ok") else "failed"
        return report

    def _hold(self, item: plan.PlanItem) -> None:
        """Record this run's start, which robin accepts only while no other run holds the destination (its
        `started` record the latest): so two hosts never copy into one volume. It also claims the name for this
        source before the volume exists, so that a rerun resumes into it. A run of this host and work dir that
        died holding it is taken over: this run holds the work dir's lock, so that one has ended."""
        ref = item.ref
        here = {"host": socket.gethostname(), "work_dir": os.path.abspath(self.options.work_dir)}
        records = self.client.migration_records(ref.project, ref.kind, ref.name)
        latest = records[-1] if records else None
        replaces = None
        if latest and latest["status"] == "started" and latest.get("run") and \
                all(latest["report"].get(key) == value for key, value in here.items()):
            replaces = latest["run"]
        self.client.record_migration(ref.project, item.label, ref.kind, ref.name, "started",
                                     {"size_bytes": item.size_bytes, **here}, run=self._run, replaces=replaces)

    def _ensure_volume(self, item: plan.PlanItem) -> dict:
        ref = item.ref
        if item.exists:
            return self.client.get_volume(ref.kind, ref.project, ref.name)
        placement = {"cluster": self.options.cluster}
        if ref.kind == "rbd":
            placement["pool"] = self.options.pool
        else:
            placement["fs"] = self.options.fs
        fields = {key: value for key, value in placement.items() if value}  # unset: robin's defaults
        return self.client.create_volume(ref.kind, ref.project, ref.name, item.size_bytes, **fields)

    def _copy_and_verify(self, item: plan.PlanItem, volume: dict) -> dict:
        ref, options = item.ref, self.options
        work = self._work_dir(ref, "run")
        keep = destination.EXT4_RESERVED if ref.kind == "rbd" else frozenset()
        ceph = destination.access(self.client, volume["cluster"], options.ceph_user, self._ceph_key())
        with gluster.mounted(item.source, work) as source, \
                destination.mounted(self._local_node(), ref, volume, ceph, work, options.fs_type) as target:
            tree = scan(source)
            copy_started = time.monotonic()
            with Progress(tree.totals.file_bytes, tree.totals.files, f"copy {ref.name}",
                          enabled=options.progress) as progress:
                copier = Copier(source, target, options.parallel, progress, keep, options.checksum, read_back=True)
                stats = copier.copy(tree)
            copy_s = time.monotonic() - copy_started
            with Progress(0, tree.totals.files, f"verify {ref.name}", enabled=options.progress) as progress:
                verification = verify(tree, target, copier.sources, copier.refused(), options.parallel,
                                      keep_at_destination_root=keep, progress=progress)
            verify_s = time.monotonic() - copy_started - copy_s
            if stats.errors or not verification.ok:
                # Entries that failed one by one may all be the source's fault: then that is the error.
                gluster.check_answering(item.source, source, gluster.client_log(work))
        totals = tree.totals
        return {"files": totals.files, "directories": totals.directories, "symlinks": totals.symlinks,
                "hardlinks": totals.hardlinks, "specials": totals.specials, "bytes": totals.file_bytes,
                "allocated_bytes": totals.allocated_bytes, "copy": stats.as_dict(),
                "copy_s": round(copy_s, 3), "verify_s": round(verify_s, 3),
                "throughput_bytes_per_s": round(stats.bytes_copied / copy_s) if copy_s > 0 else None,
                "mismatches": len(verification.mismatches), "verification": verification.as_dict()}

    def _cutover(self, item: plan.PlanItem) -> dict:
        from robin.migrate.cutover import cutover

        ref = item.ref
        try:
            summary = cutover(self.kube, self.client, item.pv, ref, self.options.storage_class)
        except MigrationError as exc:
            return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        self.client.record_migration(ref.project, item.label, ref.kind, ref.name, "cut-over", summary,
                                     run=self._run)
        return {"ok": True, **summary}

    def _finalize(self) -> int:
        from robin.migrate.cutover import finalize

        results, failed = [], False
        for name in self.options.pvs:
            try:
                result = finalize(self.kube, name)
            except MigrationError as exc:
                failed = True
                results.append({"pv": name, "ok": False, "error": {"code": exc.code, "message": exc.message}})
                continue
            if result["deleted"]:
                ref = VolumeRef.parse(result["migrated_to"])
                self.client.record_migration(ref.project, f"pv/{name}", ref.kind, ref.name, "finalized", result)
            results.append({"ok": True, **result})
        self._emit({"finalize": results}, "\n".join(
            f"{r['pv']}: {'finalized' if r['ok'] else 'REFUSED ' + r['error']['message']}" for r in results))
        return EXIT_FAILED if failed else EXIT_OK

    # --- helpers ---------------------------------------------------------------------------------------------

    def _lock(self, key: str) -> bool:
        """An exclusive lock on <work dir>/locks/<key>, held until the run ends (robin.migrate.locks; the kernel
        drops it if the process is killed); False when another process holds it."""
        path = os.path.join(self.options.work_dir, "locks", f"{key}.lock")
        if path in self._locks:
            return True
        fd = locks.take(path)
        if fd is None:
            return False
        self._locks[path] = fd
        return True

    def _destination_path(self, ref: VolumeRef) -> str:
        return destination.mountpoint(os.path.join(self._volume_dir(ref), "run"))

    def _volume_dir(self, ref: VolumeRef) -> str:
        return os.path.join(self.options.work_dir, f"{ref.kind}-{ref.project}-{ref.name}")

    def _work_dir(self, ref: VolumeRef, phase: str) -> str:
        path = os.path.join(self._volume_dir(ref), phase)
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._made.add(self._volume_dir(ref))
        return path

    def _tidy(self) -> None:
        """Remove the directories this run made that are empty now: its mounts are gone, and a client's log is
        kept only when the mount or the source failed, so what is left is a log an error named, or the mounts of a
        run that was killed (which the next run takes over). Then remove its lock files, and so end its locks."""
        for volume_dir in self._made:
            for phase in ("plan", "run"):
                gluster.remove_empty_dir(os.path.join(volume_dir, phase))
            gluster.remove_empty_dir(volume_dir)
        if self._node is not None:
            gluster.remove_empty_dir(self._node_state_dir())
        while self._locks:
            locks.release(*self._locks.popitem())

    def _local_node(self) -> Host:
        if self._node is None:
            self._node = Host(self._node_state_dir(), self.options.rbd_mounter)
        return self._node

    def _node_state_dir(self) -> str:
        return os.path.join(self.options.work_dir, "state")

    def _ceph_key(self) -> str:
        return destination.read_key(self.options.ceph_keyring, self.options.ceph_user)

    def _print_plan(self, items: list[plan.PlanItem]) -> None:
        self._emit({"plan": [item.as_dict() for item in items]}, plan.table(items))

    def _print_reports(self, reports: list[dict]) -> None:
        if self.options.report_path:
            with open(self.options.report_path, "w") as handle:
                json.dump(reports, handle, indent=2)
        lines = []
        for report in reports:
            line = f"{report['source']} -> {report['destination']['handle']}: {report['status']}"
            if "copy" in report:
                copied = report["copy"]
                there = copied["files_unchanged"] + copied["files_same_content"]
                line += (f", {report['files']:,} files, {human_bytes(report['bytes'])}, "
                         f"{copied['files_copied']:,} copied, {there:,} already there, "
                         f"{report['mismatches']} mismatches, {report['duration_s']:.1f}s")
                if copied["xattrs_refused"]:
                    line += (f", {len(copied['xattrs_refused'])} attribute(s) the destination refused (listed "
                             f"in the report's copy.xattrs_refused)")
            if "error" in report:
                line += f": {report['error']['message']}"
            lines.append(line)
        self._emit({"reports": reports}, "\n".join(lines))

    def _emit(self, document: dict, text: str) -> None:
        self.out.write((json.dumps(document, default=str) if self.options.as_json else text) + "\n")
        self.out.flush()
