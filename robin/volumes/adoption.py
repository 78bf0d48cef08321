"""Adoption: bring an existing RBD image or CephFS directory that robin does not manage under
robin, as a volume of a project with the full lifecycle afterwards.

Choices (documented in the README):
- the object must be an orphan: no live row, and not marked by robin as another live volume's;
- RBD clones are refused (their parent is not robin's to protect): flatten first;
- a CephFS directory must already be `<root>/<project>/<name>`: robin never moves data to adopt it; a CephFS
  subvolume (adopted with `group`, or on a file system in the subvolume layout) stays in its group (the
  project's by default; ceph-csi's `csi` and the like too), complete (not a clone under way, not only
  snapshots left);
- its size is Ceph's (image size; the quota xattr, or `quota_bytes` from the request, which is then
  written to the directory);
- its existing snapshots become snapshot rows, counted against max_snapshots with the bytes and
  the volume in one reservation: the whole adoption fits the quota or nothing changes (403).

The rows go in as `available` in one transaction; robin's ownership mark is written after the
commit, and a failure there removes the rows again. A crash in between leaves an available row
without the mark, which nothing relies on once the row exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from robin import config
from robin.auth.identity import Identity
from robin.ceph import CephError, cephfs_ops, rbd_ops, subvolumes
from robin.clusters import service as clusters
from robin.db import db, utcnow
from robin.errors import BadRequest, Conflict, InvalidInput, NotFound, RobinError, api_error
from robin.projects import service as projects
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes import adoption_plan
from robin.volumes.kinds import CEPHFS, RBD, Kind
from robin.volumes.models import Volume, VolumeState


@dataclass
class Found:
    """What Ceph holds under the name, as the row will record it."""

    size_bytes: int
    owner: str | None
    snapshots: dict[str, int]
    placement: dict = field(default_factory=dict)
    write_quota: bool = False


def adopt(identity: Identity, kind: Kind, project: str, spec: dict) -> Volume:
    identity.require_admin()
    placement = kind.placement(spec, project)
    with db.reading() as session:
        cluster = clusters.resolve(session, spec.get("cluster"))
        projects.find(session, project)
    conn = clusters.connection(cluster)
    if kind is RBD:
        found = _found_rbd(conn, spec, placement)
    elif "group" in spec or placement["layout"] == config.CEPHFS_SUBVOLUME:
        found = _found_subvolume(conn, spec, placement, project)
    else:
        found = _found_cephfs(conn, spec, placement)
    _require_within_maximum(found.size_bytes)
    volume = _insert(kind, project, cluster, spec, {**placement, **found.placement}, found)
    try:
        kind.mark_owner(conn, volume)
        if found.write_quota:
            kind.resize(conn, volume, volume.size_bytes)
    except (RobinError, CephError):
        _remove_rows(kind, volume)
        raise
    return volume


def _not_in_ceph(what: str) -> NotFound:
    return NotFound(f"{what} does not exist in Ceph: there is nothing to adopt", code="not_found_in_ceph",
                    details={"object": what})


def _found_rbd(conn, spec: dict, placement: dict) -> Found:
    pool, name = placement["pool"], spec["name"]
    image = rbd_ops.describe_image(conn, pool, name)
    if image is None:
        raise _not_in_ceph(f"RBD image {pool}/{name}")
    if image.parent is not None:
        raise Conflict(f"RBD image {pool}/{name} is a clone of {'@'.join(image.parent)}; robin adopts only images "
                       f"that stand alone: flatten it first (rbd flatten {pool}/{name})", code="clone_not_adoptable",
                       details={"parent": "@".join(image.parent)})
    return Found(image.size_bytes, rbd_ops.image_owner(conn, pool, name), dict(image.snapshots),
                 placement={"features": list(image.features), "image_metadata": {}})


def _found_subvolume(conn, spec: dict, placement: dict, project: str) -> Found:
    fs_name, group, name = placement["fs_name"], spec.get("group", project), spec["name"]
    where = f"{fs_name}:{group}/{name}"
    found = subvolumes.info(conn, fs_name, group, name)
    if found is None:
        raise _not_in_ceph(f"CephFS subvolume {where}")
    if found.state != "complete" or not found.path:
        raise Conflict(f"CephFS subvolume {where} is {found.state}: robin adopts only a complete subvolume (wait "
                       "for its clone to finish, or remove what is left of it)", code="subvolume_not_adoptable",
                       details={"state": found.state})
    if spec.get("path") not in (None, found.path):
        raise BadRequest(f"CephFS subvolume {where} is at {found.path}, not {spec['path']}",
                         code="outside_project_directory", details={"path": spec["path"], "expected": found.path})
    quota = spec.get("size_bytes") or found.quota_bytes
    if quota is None:
        raise InvalidInput(f"CephFS subvolume {where} has no quota: give quota_bytes to set one",
                           details={"fields": {"quota_bytes": ["required: the subvolume has no quota"]}})
    snapshots = subvolumes.list_snapshots(conn, fs_name, group, name)
    return Found(quota, found.owner, dict.fromkeys(snapshots, quota), write_quota=quota != found.quota_bytes,
                 placement={"layout": config.CEPHFS_SUBVOLUME, "subvolume_group": group, "path": found.path})


def _found_cephfs(conn, spec: dict, placement: dict) -> Found:
    fs_name, path = placement["fs_name"], placement["path"]
    if spec.get("path") not in (None, path):
        raise BadRequest(f"robin adopts only directories in the project's own directory ({path}); move "
                         f"{spec['path']} there first (robin does not move data to adopt it)",
                         code="outside_project_directory", details={"path": spec["path"], "expected": path})
    directory = cephfs_ops.describe_dir(conn, fs_name, path)
    if directory is None:
        raise _not_in_ceph(f"CephFS directory {fs_name}:{path}")
    quota = spec.get("size_bytes") or directory.quota_bytes
    if quota is None:
        raise InvalidInput(f"{fs_name}:{path} has no ceph.quota.max_bytes: give quota_bytes to set one",
                           details={"fields": {"quota_bytes": ["required: the directory has no quota"]}})
    return Found(quota, directory.owner, dict.fromkeys(directory.snapshots, quota),
                 write_quota=quota != directory.quota_bytes)


def _require_within_maximum(size_bytes: int) -> None:
    maximum = config.current().max_volume_bytes
    if size_bytes > maximum:
        raise InvalidInput(f"it holds {size_bytes} bytes, more than ROBIN_MAX_VOLUME_BYTES ({maximum})",
                           details={"size_bytes": size_bytes, "max_volume_bytes": maximum})


def _already_managed(kind: Kind, name: str, **details) -> Conflict:
    return Conflict(f"{kind.noun} {name!r} is already managed by robin", code="already_managed",
                    details={"name": name, **details})


def _insert(kind: Kind, project: str, cluster, spec: dict, placement: dict, found: Found) -> Volume:
    """The volume and its snapshots as rows, with the quota for all of them, in one transaction."""
    model = kind.model
    try:
        with db.unit_of_work() as session:
            project_row = projects.lock(session, project)
            place = {key: placement[key] for key in ("pool", "fs_name") if key in placement}
            managed = session.scalar(select(model.id).filter_by(cluster_id=cluster.id, name=spec["name"], **place)
                                     .where(model.state != VolumeState.DELETED))
            if managed is None and found.owner is not None:
                managed = session.scalar(select(model.id).where(model.id == found.owner,
                                                                model.state != VolumeState.DELETED))
            if managed is not None:
                raise _already_managed(kind, spec["name"], volume_id=managed)
            projects.reserve(session, project_row, add_bytes=found.size_bytes, add_volumes=1,
                             add_snapshots=len(found.snapshots))
            now = utcnow()
            volume = model(**placement, project=project_row, cluster=cluster, project_id=project_row.id,
                           cluster_id=cluster.id, name=spec["name"], size_bytes=found.size_bytes,
                           state=VolumeState.AVAILABLE, created_at=now, updated_at=now)
            session.add(volume)
            session.flush()
            for name, size in sorted(found.snapshots.items()):
                session.add(Snapshot(project_id=project_row.id, name=name, size_bytes=size,
                                     state=SnapshotState.AVAILABLE, created_at=now, updated_at=now,
                                     **{kind.snapshot_fk: volume.id}))
            return volume
    except IntegrityError as exc:
        # The unique indexes on live rows: another volume of the project has the name, or a race.
        raise Conflict(f"a live {kind.noun} named {spec['name']!r} exists already (in the project, or this "
                       "very object adopted meanwhile)", code="name_taken", details={"name": spec["name"]}) from exc


def _remove_rows(kind: Kind, volume: Volume) -> None:
    with db.unit_of_work() as session:
        session.execute(delete(Snapshot).where(getattr(Snapshot, kind.snapshot_fk) == volume.id))
        session.execute(delete(kind.model).where(kind.model.id == volume.id))


# --- in bulk: `robin audit drift --adopt-into PROJECT` ------------------------------------------------

def plan(findings: list[dict], project: str) -> list[dict]:
    """What adopting the orphans among `findings` into `project` would do (robin.volumes.adoption_plan); a directory
    must already be the project's `<root>/<project>/<name>`."""
    root = config.current().cephfs_root.rstrip("/")

    def misplaced(finding: dict) -> str | None:
        expected = f"{root}/{project}/{finding['evidence']['name']}"
        if finding["evidence"]["path"] == expected:
            return None
        return f"not in the project's directory (would be {expected})"

    return adoption_plan.plan(findings, misplaced)


def adopt_planned(identity: Identity, project: str, steps: list[dict]) -> list[dict]:
    """Carry out a plan, one orphan at a time: each ends adopted or refused (with the error)."""
    results = []
    for step in steps:
        if "refused" not in step:
            kind = RBD if step["collection"] == "rbd-images" else CEPHFS
            try:
                adopt(identity, kind, project, step["spec"])
                step = {**step, "adopted": True}
            except (RobinError, CephError) as exc:
                error = api_error(exc)
                step = {**step, "refused": error.message, "code": error.code}
        results.append(step)
    return results
