"""The cluster registry and each cluster's process-wide connection."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from robin import config, crypto
from robin.auth.identity import Identity
from robin.ceph import CephConnection, CephConnections, CephError
from robin.clusters.models import CephCluster
from robin.db import db
from robin.errors import Conflict, InvalidInput, NotFound, RobinError, ServiceUnavailable

DEFAULT_NAME = "default"
# A cluster's health is probed at most this often per process: readiness probes, scrapes and
# listings all read the cached answer.
HEALTH_TTL_S = 5.0
# A probe's deadline: a load balancer's readiness probe waits a few seconds at most.
HEALTH_PROBE_TIMEOUT_S = 2.0
HEALTH_PARALLELISM = 8


class _Registry:
    """Bound to settings by the app factory; holds this process's connections."""

    connections: CephConnections | None = None

    def configure(self, timeout: float) -> None:
        if self.connections is not None:
            self.connections.close()
        self.connections = CephConnections(timeout)


registry = _Registry()


def sync_default(conf_path: str, client_id: str) -> None:
    """Make the registry's default cluster the one ROBIN_CEPH_CONF names (idempotent, race-safe)."""
    if not conf_path:
        return
    try:
        with db.unit_of_work() as session:
            row = session.scalar(select(CephCluster).where(CephCluster.is_default.is_(True)))
            if row is None:
                session.add(CephCluster(name=DEFAULT_NAME, conf_path=conf_path, client_id=client_id,
                                        is_default=True))
            else:
                row.conf_path, row.client_id = conf_path, client_id
    except IntegrityError:
        pass  # another worker registered it at the same moment


def encrypt_plain_keys() -> int:
    """Encrypt the keys an older robin stored in plain text (run at every start; nothing to do once done).
    Each row is a compare-and-set: workers starting together encrypt a key once."""
    return _reencrypt_keys(lambda stored: not crypto.is_encrypted(stored))


def rotate_keys() -> int:
    """Re-encrypt every stored key with the first secret key, so that the older keys can be dropped."""
    return _reencrypt_keys(lambda stored: True)


def _reencrypt_keys(wanted) -> int:
    changed = 0
    with db.unit_of_work() as session:
        rows = session.execute(select(CephCluster.id, CephCluster.name, CephCluster.cephx_key)
                               .where(CephCluster.cephx_key.is_not(None)).order_by(CephCluster.id)).all()
        for row in filter(lambda row: wanted(row.cephx_key), rows):
            fresh = crypto.reencrypt(row.cephx_key, f"the key of cluster {row.name!r}")
            changed += session.execute(update(CephCluster).where(CephCluster.id == row.id,
                                                                 CephCluster.cephx_key == row.cephx_key)
                                       .values(cephx_key=fresh)).rowcount
    return changed


# Built once: resolving the cluster is on the path of every create.
DEFAULT_QUERY = select(CephCluster).where(CephCluster.is_default.is_(True))
BY_NAME_QUERY = select(CephCluster).where(CephCluster.name == bindparam("name"))


def resolve(session: Session, name: str | None) -> CephCluster:
    cluster = session.scalar(DEFAULT_QUERY) if name is None else session.scalar(BY_NAME_QUERY, {"name": name})
    if cluster is None:
        raise unresolved(name)
    return cluster


def unresolved(name: str | None) -> RobinError:
    """The error for a cluster name (None: the default cluster) that no registered cluster answers to."""
    if name is None:
        return ServiceUnavailable("no default Ceph cluster is configured: set ROBIN_CEPH_CONF", code="ceph_unavailable")
    return NotFound(f"Ceph cluster {name!r} is not registered", code="cluster_not_found", details={"cluster": name})


def connection(cluster: CephCluster) -> CephConnection:
    return registry.connections.get(cluster.name, cluster.access)


def list_all(identity: Identity) -> list[CephCluster]:
    """Every registered cluster, with whether it serves I/O now (`up`, `health`)."""
    if not identity.sees_all_projects:
        identity.require_admin()
    with db.reading() as session:
        registered = list(session.scalars(select(CephCluster).order_by(CephCluster.name)))
    for cluster, found in zip(registered, health_of_all(registered), strict=True):
        cluster.up, cluster.health = found.up, found.detail  # transient: only the response carries them
    return registered


def register(identity: Identity, spec: dict) -> CephCluster:
    """Register by a ceph.conf on robin's hosts (+ keyring path), or by monitors and a key."""
    identity.require_admin()
    for field in ("conf_path", "keyring_path"):
        _require_readable_file(field, spec.get(field))
    if spec.get("cephx_key"):
        spec = {**spec, "cephx_key": crypto.encrypt(spec["cephx_key"])}
    try:
        with db.unit_of_work() as session:
            cluster = CephCluster(is_default=False, **spec)
            session.add(cluster)
    except IntegrityError as exc:
        raise Conflict(f"Ceph cluster {spec['name']!r} is already registered", code="cluster_exists") from exc
    return cluster


def _require_readable_file(field: str, path: str | None) -> None:
    """A registration names files on robin's hosts: refuse a typo now rather than fail every later call on the
    cluster. (Monitors that do not answer are accepted: a cluster may be down for a while, and says so.)"""
    if path is None or (os.path.isfile(path) and os.access(path, os.R_OK)):
        return
    if os.path.isfile(path):
        problem = "cannot be read by robin"
    else:
        problem = "is not a file" if os.path.exists(path) else "does not exist"
    message = f"{path} {problem} on robin's host; give the path where robin's hosts have it mounted"
    raise InvalidInput(f"{field}: {message}", code="cluster_file_unreadable",
                       details={"fields": {field: [message]}})


def unregister(identity: Identity, name: str) -> None:
    """Forget a cluster; refused for the default one and while any volume row references it."""
    from robin.volumes.models import VOLUME_MODELS

    identity.require_admin()
    with db.unit_of_work() as session:
        cluster = resolve(session, name)
        if cluster.is_default:
            raise Conflict("the default cluster comes from ROBIN_CEPH_CONF and cannot be removed",
                           code="cluster_is_default")
        if any(session.scalar(select(model.id).where(model.cluster_id == cluster.id).limit(1))
               for model in VOLUME_MODELS):
            raise Conflict(f"volumes on cluster {name!r} are still recorded", code="cluster_in_use")
        session.delete(cluster)
    registry.connections.forget(name)


PUBLIC_FIELDS = ("name", "conf_path", "keyring_path", "mon_host", "client_id", "is_default", "created_at")


def get(identity: Identity, name: str) -> dict:
    """The cluster (without its key) and what it offers (pools, file systems), or why it cannot
    be reached."""
    if not identity.sees_all_projects:
        identity.require_admin()
    with db.reading() as session:
        cluster = resolve(session, name)
    public = {field: getattr(cluster, field) for field in PUBLIC_FIELDS}
    try:
        return {**public, "reachable": True, **connection(cluster).describe()}
    except (RobinError, CephError) as exc:
        return {**public, "reachable": False, "error": exc.message}


# --- health: whether a cluster serves I/O --------------------------------------------------------

@dataclass(frozen=True)
class Health:
    up: bool
    detail: str  # "ok", or "unavailable: <why>"
    checked_at: float


class _HealthCache:
    """The last probe of each cluster; one probe at a time per cluster, the others wait for its answer."""

    def __init__(self):
        self._lock = threading.Lock()
        self._found: dict[str, Health] = {}
        self._probing: dict[str, threading.Lock] = {}

    def get(self, cluster: CephCluster, pools: list[str]) -> Health:
        with self._lock:
            probing = self._probing.setdefault(cluster.name, threading.Lock())
        with probing:
            found = self._found.get(cluster.name)
            if found is None or time.monotonic() - found.checked_at >= HEALTH_TTL_S:
                found = self._found[cluster.name] = _probe(cluster, pools)
            return found


health_cache = _HealthCache()


def health(cluster: CephCluster) -> Health:
    """Whether the cluster's monitors, and the OSDs of the pools robin uses there, answer (cached)."""
    return health_cache.get(cluster, _pools_in_use(cluster))


def health_of_all(registered: list[CephCluster]) -> list[Health]:
    if not registered:
        return []
    pools = [_pools_in_use(cluster) for cluster in registered]  # here: the probes' threads have no app context
    with ThreadPoolExecutor(max_workers=min(HEALTH_PARALLELISM, len(registered))) as pool:
        return list(pool.map(health_cache.get, registered, pools))


def _probe(cluster: CephCluster, pools: list[str]) -> Health:
    try:
        connection(cluster).probe(pools, HEALTH_PROBE_TIMEOUT_S)
        return Health(True, "ok", time.monotonic())
    except (RobinError, CephError) as exc:
        return Health(False, f"unavailable: {exc.message}", time.monotonic())


def _pools_in_use(cluster: CephCluster) -> list[str]:
    """The pools robin's live images are in on this cluster and, on the default one, those tenants may use."""
    from robin.volumes.models import RbdImage, VolumeState

    with db.reading() as session:
        pools = set(session.scalars(select(RbdImage.pool).distinct().where(
            RbdImage.cluster_id == cluster.id, RbdImage.state != VolumeState.DELETED)))
    if cluster.is_default:
        pools.update(config.current().rbd_pools)
    return sorted(pools)
