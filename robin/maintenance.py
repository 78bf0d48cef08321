"""The background loop of `robin serve`: probe the clusters, purge what the trash has due, reconcile,
re-measure stale usage, sum the volume totals per project and pool, downsample the usage history, and survey the
drift when the last survey is older than ROBIN_DRIFT_INTERVAL.
What it finds is stored for the metrics scrape, which never calls Ceph itself.

Every gunicorn worker runs the loop, but only the one holding the maintenance lock (robin.leadership) acts.
The gauge robin_maintenance_leader says from outside which replica holds it.
"""
from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from robin.ceph import CephError
from robin.errors import RobinError
from robin.leadership import Leadership
from robin.metrics import MAINTENANCE_LEADER

log = logging.getLogger(__name__)
ADVISORY_LOCK_KEY = 0x726F62696E  # "robin"
LOCK_NAME = "maintenance"  # on SQLite: <database>.maintenance.lock
RECONCILE_OLDER_THAN = timedelta(minutes=5)


def maintenance_lock(database_url: str, **options) -> Leadership:
    return Leadership(database_url, LOCK_NAME, ADVISORY_LOCK_KEY, **options)


def run_once(app: Flask) -> None:
    from robin.audit import history, usage
    from robin.health import record_cluster_probes
    from robin.reconcile.service import reconcile
    from robin.volumes.service import purge_due

    with app.app_context():
        record_cluster_probes()  # first: a cluster that went down shows on /metrics within a round
        purged = purge_due()
        report = reconcile(RECONCILE_OLDER_THAN, survey_drift=False)
        # Only figures older than usage.MAX_AGE (and new volumes): a round stays short.
        measured = usage.refresh(stale_after=usage.MAX_AGE)
        # After the refresh, so that the scrape's used bytes are this round's figures.
        totals = usage.store_totals()
        downsampled = history.downsample()  # raw samples to hourly means, hourly to daily, past retention
        surveyed = _survey_drift(app)
    log.info("maintenance round", extra={**purged, "fixed": len(report.fixed), "errors": len(report.errors),
                                         "usage_measured": measured.measured, "volume_totals": totals,
                                         **downsampled, **surveyed})


def _survey_drift(app: Flask) -> dict:
    """The drift survey on its own schedule (listings, and at most ROBIN_DRIFT_OPENS image opens a pool); 0 turns
    it off."""
    from robin.audit import drift

    interval = app.config["ROBIN_SETTINGS"].drift_interval
    if interval <= 0:
        return {}
    survey = drift.survey_if_due(timedelta(seconds=interval))
    if survey is None:
        return {}
    return {"drift": len(survey.findings), "drift_errors": len(survey.errors),
            "drift_images_opened": survey.budget.opened, "drift_images_deferred": survey.budget.deferred}


def _loop(app: Flask, interval: float, stop: threading.Event) -> None:
    leadership = maintenance_lock(app.config["ROBIN_SETTINGS"].database_url)
    # Jitter, so that workers started together do not all knock at once.
    while not stop.wait(interval * random.uniform(0.8, 1.2)):
        try:
            _round(app, leadership)
        except (RobinError, CephError, OSError, SQLAlchemyError) as exc:
            log.warning("maintenance round failed", extra={"error": str(exc)})


def _round(app: Flask, leadership: Leadership) -> None:
    """Take (or keep) the lock, say on /metrics whether this worker holds it, and act only if it does."""
    leading = False
    try:
        leading = leadership.acquire()
    finally:
        MAINTENANCE_LEADER.set(1 if leading else 0)  # a failed attempt leads nothing
    if leading:
        run_once(app)


def start(app: Flask) -> threading.Event | None:
    """Start the loop in a daemon thread (gunicorn's post_worker_init); return its stop event."""
    interval = app.config["ROBIN_SETTINGS"].maintenance_interval
    if interval <= 0:
        return None
    stop = threading.Event()
    threading.Thread(target=_loop, args=(app, interval, stop), name="robin-maintenance", daemon=True).start()
    return stop
