"""Liveness, readiness and metrics endpoints (outside the OpenAPI document)."""
from __future__ import annotations

from flask import Blueprint, Response, g, jsonify
from sqlalchemy import delete, select, text
from sqlalchemy.exc import SQLAlchemyError

from robin import metrics
from robin.audit import drift, usage
from robin.audit.models import ClusterProbe, upsert
from robin.clusters import service as clusters
from robin.clusters.models import CephCluster
from robin.db import db, utcnow

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz():
    """The process answers; says nothing about its dependencies (that is /readyz)."""
    return jsonify({"status": "ok"})


def _check_database() -> str:
    try:
        with db.reading() as session:
            session.execute(text("SELECT 1"))
        return "ok"
    except SQLAlchemyError as exc:
        return f"unavailable: {type(exc).__name__}"


def _check_default_cluster() -> str:
    with db.reading() as session:
        cluster = session.scalar(clusters.DEFAULT_QUERY)
    if cluster is None:
        return "unavailable: no default Ceph cluster is configured (ROBIN_CEPH_CONF)"
    return clusters.health(cluster).detail


@blp.get("/readyz")
def readyz():
    """Ready when the database answers and the default cluster serves I/O. Other registered clusters
    do not count: a cluster that is down fails only its own volumes' requests (it shows in
    robin_ceph_cluster_up and in GET /api/v2/clusters)."""
    checks = {"database": _check_database()}
    if checks["database"] == "ok":
        checks["ceph:default"] = _check_default_cluster()
    if all(result == "ok" for result in checks.values()):
        return jsonify({"status": "ready", "checks": checks})
    failing = sorted(name for name, result in checks.items() if result != "ok")
    body = {"error": {"code": "not_ready", "message": f"not ready: {', '.join(failing)} unavailable",
                      "details": {"checks": checks}}}
    return jsonify(body), 503


def record_cluster_probes() -> None:
    """Probe every registered cluster and store the answers for the scrape (the maintenance loop's job)."""
    with db.reading() as session:
        registered = list(session.scalars(select(CephCluster).order_by(CephCluster.name)))
    found = clusters.health_of_all(registered)
    now = utcnow()
    with db.unit_of_work() as session:
        upsert(session, ClusterProbe, ClusterProbe.cluster_id, [
            {"cluster_id": cluster.id, "up": health.up, "detail": health.detail, "probed_at": now}
            for cluster, health in zip(registered, found, strict=True)])
        # A cluster removed since is gone from the scrape with its probe.
        session.execute(delete(ClusterProbe).where(ClusterProbe.cluster_id.not_in([c.id for c in registered])))


def cluster_probe_rows() -> list[dict]:
    """robin_ceph_cluster_up at scrape time: the last recorded probe of each cluster, never a new one."""
    with db.reading() as session:
        rows = session.execute(select(CephCluster.name, ClusterProbe.up, ClusterProbe.probed_at)
                               .join(ClusterProbe, ClusterProbe.cluster_id == CephCluster.id)
                               .order_by(CephCluster.name)).all()
    return [{"cluster": name, "up": up, "probed_at": probed_at} for name, up, probed_at in rows]


@blp.get("/metrics")
def prometheus_metrics():
    """Per-project quota and usage series: for admins, auditors and the scrape role, never a project's member.
    Everything comes from the database (quotas, and what the maintenance loop last measured, summed, surveyed
    and probed): a scrape never calls Ceph, nor sums every volume, whatever the fleet's size."""
    g.identity.require_metrics()
    payload, content_type = metrics.render(usage.scrape_rows, drift.metric_counts, cluster_probe_rows)
    return Response(payload, content_type=content_type)
