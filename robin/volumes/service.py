"""RBD image lifecycle: database state machine around idempotent Ceph calls.

Each mutation is: a transaction that validates, reserves quota and moves the row into a
transitional state -> the Ceph call -> a transaction that records the result. A failure in the
middle undoes what was done and re-raises the original error. A crash in the middle leaves a row
in `creating`, `resizing` or `deleting` for the reconciler:
  creating: the image may or may not exist (marked with the row id when it does) -> finish or drop;
  resizing: Ceph's size is the old or the target size -> record what Ceph has;
  deleting: the image may still exist -> remove it (idempotent) and mark the row deleted.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from robin import config
from robin.auth.identity import Identity
from robin.ceph import CephAlreadyExists, CephNotConnected, rbd_ops
from robin.clusters import service as clusters
from robin.db import db, utcnow
from robin.errors import BadRequest, Conflict, InvalidInput, NotFound, RobinError
from robin.pagination import Page, paginate
from robin.projects import service as projects
from robin.volumes.models import RbdImage, VolumeState

log = logging.getLogger(__name__)
USAGE_PARALLELISM = 8


def _find(session: Session, project: str, name: str) -> RbdImage:
    project_row = projects.find(session, project)
    image = session.scalar(select(RbdImage).where(
        RbdImage.project_id == project_row.id, RbdImage.name == name, RbdImage.state != VolumeState.DELETED))
    if image is None:
        raise NotFound(f"RBD image {name!r} does not exist in project {project!r}", code="volume_not_found",
                       details={"project": project, "image": name})
    return image


def _name_taken(name: str, pool: str, cluster: str) -> Conflict:
    return Conflict(f"an RBD image named {name!r} already exists in pool {pool!r} of cluster {cluster!r}",
                    code="name_taken", details={"image": name, "pool": pool, "cluster": cluster})


def _set_state(image: RbdImage, state: VolumeState, **values) -> RbdImage:
    """Record an outcome on the row and on the caller's (detached) copy. A plain UPDATE by
    primary key: the copy already holds everything else, so nothing is loaded again."""
    values = {"state": state, "updated_at": utcnow(), **values}
    with db.writing() as connection:
        connection.execute(update(RbdImage.__table__).where(RbdImage.id == image.id).values(**values))
    for key, value in values.items():
        setattr(image, key, value)
    return image


def _check_pool(pool: str | None) -> str:
    settings = config.current()
    pool = pool or settings.rbd_default_pool
    if pool not in settings.rbd_pools:
        raise InvalidInput(f"pool {pool!r} is not one robin places images in; use one of {list(settings.rbd_pools)}",
                           details={"fields": {"pool": [f"must be one of {list(settings.rbd_pools)}"]}})
    return pool


# --- create -----------------------------------------------------------------------------------

def create(identity: Identity, project: str, spec: dict) -> RbdImage:
    identity.require_write(project)
    pool = _check_pool(spec.get("pool"))
    features = spec.get("features") or list(config.current().rbd_default_features)
    image = _reserve_new(project, spec, pool, features)
    conn = clusters.connection(image.cluster)
    try:
        rbd_ops.create_image(conn, pool, image.name, image.size_bytes, features, owner=image.id,
                             metadata=image.image_metadata)
    except RobinError as exc:
        _undo_create(image, exc)
        if isinstance(exc, CephAlreadyExists):
            raise _name_taken(image.name, pool, image.cluster.name) from exc
        raise
    return _set_state(image, VolumeState.AVAILABLE)


def _reserve_new(project: str, spec: dict, pool: str, features: list[str]) -> RbdImage:
    try:
        with db.unit_of_work() as session:
            cluster = clusters.resolve(session, spec.get("cluster"))
            project_row = projects.lock(session, project)
            projects.reserve(session, project_row, add_bytes=spec["size_bytes"], add_volumes=1)
            image = RbdImage(project=project_row, cluster=cluster, pool=pool, name=spec["name"],
                             size_bytes=spec["size_bytes"], features=features,
                             image_metadata=spec.get("metadata") or {}, state=VolumeState.CREATING)
            session.add(image)
            session.flush()
            return image
    except IntegrityError as exc:
        # The unique indexes on live rows are the name check, races included.
        raise _name_taken(spec["name"], pool, spec.get("cluster") or clusters.DEFAULT_NAME) from exc


def _undo_create(image: RbdImage, cause: RobinError) -> None:
    """Remove what a failed create left, then the row, releasing its quota. When the image's
    fate cannot be known (Ceph stopped answering mid-way), keep the row in `error` holding its
    quota, so the reconciler can decide without ever exceeding the quota."""
    if not isinstance(cause, (CephAlreadyExists, CephNotConnected)):
        try:
            rbd_ops.remove_image(clusters.connection(image.cluster), image.pool, image.name)
        except RobinError as undo_error:
            log.error("could not undo a failed create", extra={"image": image.id, "error": undo_error.message})
            _set_state(image, VolumeState.ERROR, error_message=f"create failed: {cause.message}")
            return
    with db.unit_of_work() as session:
        session.execute(RbdImage.__table__.delete().where(RbdImage.id == image.id))


# --- read -------------------------------------------------------------------------------------

def get(identity: Identity, project: str, name: str, *, with_used: bool = False) -> RbdImage:
    identity.require_read(project)
    with db.reading() as session:
        image = _find(session, project, name)
    if with_used:
        image.used_bytes = used_bytes(image)
    return image


def list_page(identity: Identity, project: str, limit: int, cursor: str | None) -> Page:
    identity.require_read(project)
    with db.reading() as session:
        project_row = projects.find(session, project)
        query = select(RbdImage).where(RbdImage.project_id == project_row.id, RbdImage.state != VolumeState.DELETED)
        return paginate(session, query, RbdImage.name, limit, cursor)


def used_bytes(image: RbdImage) -> int:
    return rbd_ops.used_bytes(clusters.connection(image.cluster), image.pool, image.name)


def project_usage(identity: Identity, project: str) -> dict:
    identity.require_read(project)
    with db.reading() as session:
        project_row = projects.find(session, project)
        provisioned = projects.provisioned(session, project_row.id)
        images = list(session.scalars(select(RbdImage).where(
            RbdImage.project_id == project_row.id, RbdImage.state == VolumeState.AVAILABLE)))
    with ThreadPoolExecutor(max_workers=USAGE_PARALLELISM) as pool:
        used = sum(pool.map(used_bytes, images))
    quota = project_row.quota
    return {
        "project": project,
        "quota": quota,
        "provisioned_bytes": provisioned.bytes,
        "used_bytes": used,
        "volumes": provisioned.volumes,
        "remaining_bytes": max(0, quota.max_bytes - provisioned.bytes),
        "remaining_volumes": max(0, quota.max_volumes - provisioned.volumes),
    }


# --- resize -----------------------------------------------------------------------------------

def resize(identity: Identity, project: str, name: str, size_bytes: int, allow_shrink: bool) -> RbdImage:
    identity.require_write(project)
    image, changed = _begin_resize(project, name, size_bytes, allow_shrink)
    if not changed:
        return image
    try:
        rbd_ops.resize_image(clusters.connection(image.cluster), image.pool, image.name, size_bytes)
    except RobinError:
        _set_state(image, VolumeState.AVAILABLE, target_size_bytes=None)
        raise
    return _set_state(image, VolumeState.AVAILABLE, size_bytes=size_bytes, target_size_bytes=None)


def _begin_resize(project: str, name: str, size_bytes: int, allow_shrink: bool) -> tuple[RbdImage, bool]:
    with db.unit_of_work() as session:
        project_row = projects.lock(session, project)
        image = _find(session, project, name)
        _require_available(image, "resized")
        if size_bytes == image.size_bytes:
            return image, False
        if size_bytes < image.size_bytes and not allow_shrink:
            raise BadRequest(f"{size_bytes} bytes is smaller than the image's {image.size_bytes}; shrinking "
                             "destroys data at the end of the image, so it needs \"allow_shrink\": true",
                             code="shrink_not_allowed",
                             details={"size_bytes": image.size_bytes, "requested_size_bytes": size_bytes})
        if size_bytes > image.size_bytes:
            projects.reserve(session, project_row, add_bytes=size_bytes - image.size_bytes)
        image.state = VolumeState.RESIZING
        image.target_size_bytes = size_bytes
        session.flush()
        return image, True


def _require_available(image: RbdImage, verb: str) -> None:
    if image.state is not VolumeState.AVAILABLE:
        raise Conflict(f"RBD image {image.name!r} is {image.state.value} and cannot be {verb} now; retry later",
                       code="volume_busy", details={"state": image.state.value})


# --- delete -----------------------------------------------------------------------------------

def delete(identity: Identity, project: str, name: str) -> None:
    identity.require_write(project)
    with db.unit_of_work() as session:
        image = _find(session, project, name)
        if image.state is not VolumeState.ERROR:
            _require_available(image, "deleted")
        previous = image.state
        image.state = VolumeState.DELETING
    try:
        rbd_ops.remove_image(clusters.connection(image.cluster), image.pool, image.name)
    except RobinError:
        _set_state(image, previous)
        raise
    _set_state(image, VolumeState.DELETED, deleted_at=utcnow())
