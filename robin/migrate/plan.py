"""The plan of a migration: for each source, its destination volume (kind, project, name, size), what the source
holds, and whether robin can take it: the project exists and its quota covers every new volume, or the volume is
one an earlier run of this same migration started (then the run resumes into it).

Sizes: a CephFS quota counts file sizes with their holes (ceph.dir.rbytes), so a CephFS destination gets the
source's logical bytes; a file system on an RBD image stores only data blocks but needs room for its own
metadata, so an RBD destination gets the allocated bytes plus inodes and ext4's overhead. Either way plus the
headroom, never less than a Kubernetes volume's capacity, rounded up to whole GiB.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from robin.client import RobinApiError, RobinClient, VolumeRef, volume_size
from robin.migrate.errors import MigrationError
from robin.migrate.gluster import GlusterSource
from robin.migrate.names import volume_name
from robin.migrate.tree import Totals

GiB = 2**30
INODE_BYTES = 4096  # every directory, symlink and small file takes at least a block on ext4
EXT4_OVERHEAD = 0.07  # inode tables (1.6%), journal (up to 128 MiB), bitmaps, group descriptors
# Statuses after which the destination is the workload's: a copy into it would remove what it wrote since.
HANDED_OVER = frozenset({"cut-over", "finalized"})


@dataclass
class PlanItem:
    label: str  # how reports name the source: its spec, or pv/<name>
    source: GlusterSource
    ref: VolumeRef
    totals: Totals  # what the source holds, once measured
    size_bytes: int | None  # None until the source is measured: a source that cannot be read has no size
    capacity_bytes: int | None = None  # a Kubernetes volume's capacity
    pv: object | None = None  # robin.migrate.kubernetes.GlusterPv
    exists: bool = False  # the destination volume is there already: this run resumes into it
    volume: dict | None = None  # robin's view of that volume
    refusal_code: str | None = None
    refusal: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None

    @property
    def measured(self) -> bool:
        return self.size_bytes is not None

    def refuse(self, code: str, message: str) -> None:
        if self.refusal is None:
            self.refusal_code, self.refusal = code, message

    def as_dict(self) -> dict:
        """The plan of one source; the counts and sizes are null when the source could not be measured."""
        totals = self.totals
        counts = {"files": totals.files, "directories": totals.directories, "symlinks": totals.symlinks,
                  "hardlinks": totals.hardlinks, "specials": totals.specials, "logical_bytes": totals.logical_bytes,
                  "allocated_bytes": totals.allocated_bytes, "acl_entries": totals.acl_entries,
                  "xattr_entries": totals.xattr_entries}
        return {"source": self.label, "kind": self.ref.kind, "project": self.ref.project, "name": self.ref.name,
                "size_bytes": self.size_bytes, "capacity_bytes": self.capacity_bytes, "resume": self.exists,
                **{key: value if self.measured else None for key, value in counts.items()}, "ok": self.ok,
                "refusal": None if self.ok else {"code": self.refusal_code, "message": self.refusal}}


def destination_name(source: GlusterSource) -> str:
    """gluster-<volume>[-<directory>]."""
    return volume_name("-".join(["gluster", source.volume] + ([source.subdir] if source.subdir else [])))


def same_source(recorded: str, label: str) -> bool:
    """Whether a migration record's source is this one, however either was spelled (records written before sources
    had one spelling included)."""
    if recorded == label:
        return True
    try:
        return str(GlusterSource.parse(recorded)) == label
    except MigrationError:
        return False  # pv/<name>, or no source at all


def needed_bytes(kind: str, totals: Totals) -> int:
    if kind == "cephfs":
        return totals.logical_bytes
    inodes = totals.directories + totals.symlinks + totals.specials + totals.files
    return math.ceil((totals.allocated_bytes + inodes * INODE_BYTES) * (1 + EXT4_OVERHEAD))


def size_for(kind: str, totals: Totals, headroom: float, capacity: int | None = None) -> int:
    wanted = max(math.ceil(needed_bytes(kind, totals) * (1 + headroom)), capacity or 0, 1)
    return -(-wanted // GiB) * GiB


def check(items: list[PlanItem], client: RobinClient) -> None:
    """Refuse what robin cannot take, before anything is created: missing projects, a destination name another
    migration (or nobody's) uses, a destination already cut over, an existing destination too small, and quotas
    that the new volumes would pass."""
    by_project: dict[str, list[PlanItem]] = defaultdict(list)
    for item in items:
        by_project[item.ref.project].append(item)
        _check_destination(item, client)
    for project, members in by_project.items():
        _check_quota(project, [m for m in members if m.ok and not m.exists], client)


def _check_destination(item: PlanItem, client: RobinClient) -> None:
    try:
        volume = client.get_volume(item.ref.kind, item.ref.project, item.ref.name)
    except RobinApiError as exc:
        if exc.code == "project_not_found":
            item.refuse(exc.code, f"project {item.ref.project!r} does not exist: an admin creates it, with a "
                                  f"quota that fits what is migrated into it")
        elif exc.code != "volume_not_found":
            raise
        else:
            _check_name_claim(item, client)
        return
    records = client.migration_records(item.ref.project, item.ref.kind, item.ref.name)
    if not any(same_source(record["source"], item.label) for record in records):
        others = sorted({record["source"] for record in records})
        item.refuse("destination_exists", f"{item.ref.kind} volume {item.ref.name!r} exists in project "
                                          f"{item.ref.project!r} and "
                                          + (f"holds a migration of {', '.join(others)}, not of {item.label}"
                                             if others else f"no migration from {item.label} started it")
                                          + ": nothing was changed; choose another name (--name)")
        return
    handed_over = [record for record in records if record["status"] in HANDED_OVER]
    if handed_over:
        last = handed_over[-1]
        item.refuse("already_cut_over", f"{item.ref.handle} was {last['status']} at {last['at']}: the workload "
                                        f"writes to it now, and another copy would delete what it wrote since. "
                                        f"Nothing was changed; migrate into a new volume (--name) to copy again")
        return
    item.exists, item.volume = True, volume
    if volume_size(item.ref.kind, volume) < needed_bytes(item.ref.kind, item.totals):
        item.refuse("destination_too_small", f"{item.ref.name!r} holds {volume_size(item.ref.kind, volume)} "
                                             f"bytes, the source now needs {needed_bytes(item.ref.kind, item.totals)}"
                                             f": resize it, then run again")
    item.size_bytes = volume_size(item.ref.kind, volume)


def _check_name_claim(item: PlanItem, client: RobinClient) -> None:
    """A run records `started` before it creates the volume, claiming the name for its source: while that run has
    not finished (or was killed before it made the volume), the name is not free for another source."""
    records = client.migration_records(item.ref.project, item.ref.kind, item.ref.name)
    latest = records[-1] if records else None
    if latest and latest["status"] == "started" and not same_source(latest["source"], item.label):
        item.refuse("destination_exists", f"{item.ref.handle} is the destination of a migration of "
                                          f"{latest['source']} that started at {latest['at']} and has not finished: "
                                          f"nothing was changed; choose another name (--name) for {item.label}")


def _check_quota(project: str, new: list[PlanItem], client: RobinClient) -> None:
    """Refuse every new volume of the project when they do not fit its quota together, naming the limit (or
    both) they pass: its count of volumes (max_volumes) or its bytes (max_bytes)."""
    if not new:
        return
    usage = client.project_usage(project)
    wanted_bytes, wanted_volumes = sum(item.size_bytes for item in new), len(new)
    quota, passed = usage["quota"], {}  # the quota field passed -> how
    if wanted_volumes > usage["remaining_volumes"]:
        passed["max_volumes"] = (f"its volume-count limit (max_volumes {quota['max_volumes']}, {usage['volumes']} "
                                 f"in use) leaves room for {usage['remaining_volumes']} more volume(s) and this "
                                 f"migration makes {wanted_volumes}")
    if wanted_bytes > usage["remaining_bytes"]:
        passed["max_bytes"] = (f"its byte limit (max_bytes {quota['max_bytes']}) leaves {usage['remaining_bytes']} "
                               f"bytes and the new volume(s) need {wanted_bytes}")
    if not passed:
        return
    message = (f"the quota of project {project!r} refuses: {'; '.join(passed.values())}. Nothing was changed; "
               f"raise its quota ({' and '.join(passed)}: PATCH /api/v2/projects/{project}) or migrate fewer volumes "
               f"at once")
    for item in new:
        item.refuse("quota_exceeded", message)


def table(items: list[PlanItem]) -> str:
    """The plan for people: one line per source."""
    header = ("SOURCE", "DESTINATION", "SIZE", "FILES", "DATA", "STATE")
    rows = [header]
    for item in items:
        state = "resume" if item.exists else "new"
        if not item.ok:
            state = f"REFUSED {item.refusal_code}: {item.refusal}"
        # A source that could not be read shows "-": no size was worked out, and none was asked of the quota.
        sizes = (_gib(item.size_bytes), f"{item.totals.files:,}", _gib(item.totals.logical_bytes)) \
            if item.measured else ("-", "-", "-")
        rows.append((item.label, item.ref.handle, *sizes, state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
                      + "  " + row[-1] for row in rows] + _attribute_notes(items))


def _attribute_notes(items: list[PlanItem]) -> list[str]:
    """What a source carries beyond modes and owners: copied and verified too, and what `cp -a` would also keep."""
    notes = []
    for item in items:
        totals = item.totals
        if totals.acl_entries or totals.xattr_entries:
            notes.append(f"{item.label}: {totals.acl_entries:,} entries with POSIX ACLs, {totals.xattr_entries:,} "
                         f"with extended attributes (copied and verified)")
    return notes


def _gib(count: int) -> str:
    return f"{count / GiB:.2f} GiB"
