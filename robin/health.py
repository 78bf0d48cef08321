"""Liveness, readiness and metrics endpoints (outside the OpenAPI document)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Response, g, jsonify
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from robin import metrics
from robin.audit import drift, usage
from robin.clusters import service as clusters
from robin.clusters.models import CephCluster
from robin.db import db
from robin.errors import RobinError
from robin.projects import service as projects

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


def _check_cluster(cluster: CephCluster) -> str:
    try:
        clusters.check_reachable(cluster)
        return "ok"
    except RobinError as exc:
        return f"unavailable: {exc.message}"


@blp.get("/readyz")
def readyz():
    """Ready when the database and every registered Ceph cluster answer."""
    checks = {"database": _check_database()}
    if checks["database"] == "ok":
        with db.reading() as session:
            registered = list(session.scalars(select(CephCluster)))
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(registered)))) as pool:
            for cluster, result in zip(registered, pool.map(_check_cluster, registered), strict=True):
                checks[f"ceph:{cluster.name}"] = result
    if all(result == "ok" for result in checks.values()):
        return jsonify({"status": "ready", "checks": checks})
    failing = sorted(name for name, result in checks.items() if result != "ok")
    body = {"error": {"code": "not_ready", "message": f"not ready: {', '.join(failing)} unavailable",
                      "details": {"checks": checks}}}
    return jsonify(body), 503


@blp.get("/metrics")
def prometheus_metrics():
    """Per-project quota and usage series: for admins, auditors and the scrape role, never a project's member."""
    g.identity.require_metrics()
    payload, content_type = metrics.render(projects.quota_rows, usage.metric_rows, drift.metric_counts)
    return Response(payload, content_type=content_type)
