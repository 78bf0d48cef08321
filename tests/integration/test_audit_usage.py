"""Usage reports: figures measured in Ceph (fast-diff, its fallback, rbytes), cached with their time,
reported per project/pool/volume to auditors and admins and per project to its readers (from the cache,
with no Ceph call, unless an admin asks for a refresh), printed by the CLI and exported as gauges."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
import rbd
from sqlalchemy import func, select

from robin.audit import drift, usage
from robin.audit.models import AuditEvent
from robin.ceph.rbd_ops import FAST_DIFF, FULL_SCAN
from robin.clusters.models import CephCluster
from robin.db import db
from robin.health import record_cluster_probes
from robin.projects.models import Project
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique
from tests.support.ceph_calls import ceph_calls
from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.integration
MiB, GiB = 2**20, 2**30
OBJECT = 4 * MiB  # RBD's default object size: used bytes come in whole objects


@pytest.fixture()
def project(new_project):
    return new_project(max_bytes=10 * GiB, max_volumes=20)


def create_image(admin, project, size=64 * MiB) -> dict:
    response = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": unique("img"), "size_bytes": size})
    assert response.status_code == 201, response.json
    return response.json


def create_path(admin, project, quota=64 * MiB) -> dict:
    response = admin.post(f"/api/v2/projects/{project}/cephfs-paths", json={"name": unique("fs"), "quota_bytes": quota})
    assert response.status_code == 201, response.json
    return response.json


def write_image(rbd_ioctx, name: str, extents) -> None:
    with rbd.Image(rbd_ioctx, name) as image:
        for offset, length in extents:
            image.write(b"x" * length, offset)


def write_file(fs, path: str, length: int) -> None:
    handle = fs.open(path, "w", 0o644)
    fs.write(handle, b"z" * length, 0)
    fs.close(handle)


def refresh(app, *volumes) -> usage.RefreshResult:
    with app.app_context():
        return usage.refresh(volume_ids=[volume["id"] for volume in volumes])


def store_totals(app) -> None:
    """The maintenance leader's totals pass, which the scrape's project and pool gauges report."""
    with app.app_context():
        usage.store_totals()


def report(admin, **query) -> dict:
    response = admin.get("/api/v2/audit/usage", query_string={"volumes": "true", **query})
    assert response.status_code == 200, response.json
    return response.json


def project_usage(client, project: str, **query):
    return client.get(f"/api/v2/projects/{project}/usage", query_string=query)


def volume_in(body: dict, volume_id: str) -> dict:
    return next(v for v in body["volumes"] if v["id"] == volume_id)


def project_in(body: dict, project: str) -> dict:
    return next(p for p in body["projects"] if p["project"] == project)


def test_figures_match_what_was_written(app, admin, project, rbd_ioctx, fs):
    image, path = create_image(admin, project), create_path(admin, project)
    write_image(rbd_ioctx, image["name"], [(0, 3 * MiB), (10 * MiB, MiB)])  # objects 0 and 2
    write_file(fs, f"{path['path']}/data", 3 * MiB)
    snap = admin.post(f"/api/v2/projects/{project}/rbd-images/{image['name']}/snapshots", json={"name": "s1"})
    assert snap.status_code == 201, snap.json

    def rbytes_counted() -> bool:  # the MDS updates rbytes lazily
        refresh(app, path)
        return volume_in(report(admin), path["id"])["used_bytes"] == 3 * MiB

    wait_until(rbytes_counted, timeout=30, what="ceph.dir.rbytes to count the file")
    refresh(app, image)
    body = report(admin)
    rbd_row, fs_row = volume_in(body, image["id"]), volume_in(body, path["id"])
    assert rbd_row["used_bytes"] == 2 * OBJECT >= 4 * MiB and rbd_row["method"] == FAST_DIFF
    assert rbd_row["snapshots"] == 1 and rbd_row["provisioned_bytes"] == 64 * MiB
    assert fs_row["method"] == "rbytes" and fs_row["pool"] == "cephfs"
    totals = project_in(body, project)
    assert totals["provisioned_bytes"] == 128 * MiB and totals["used_bytes"] == 2 * OBJECT + 3 * MiB
    assert totals["volumes"] == 2 and totals["snapshots"] == 1 and totals["unmeasured_volumes"] == 0
    assert totals["thin_ratio"] == round(128 / 11, 2) and totals["quota_bytes"] == 10 * GiB
    assert any(pool["kind"] == "rbd" and pool["pool"] == "rbd" and pool["used_bytes"] >= 2 * OBJECT
               for pool in body["pools"])
    [cluster] = [c for c in body["clusters"] if c["error"] is None][:1]
    assert cluster["total_bytes"] > 0 and "rbd" in {pool["name"] for pool in cluster["pools"]}
    assert len(body["top_consumers"]) <= 10
    assert body["top_consumers"] == sorted(body["top_consumers"], key=lambda v: -v["used_bytes"])


def test_an_invalid_object_map_falls_back_to_a_full_scan_and_says_so(app, admin, project, rbd_ioctx):
    image = create_image(admin, project)
    write_image(rbd_ioctx, image["name"], [(0, MiB), (8 * MiB, MiB)])
    maps = rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
    with rbd.Image(rbd_ioctx, image["name"]) as handle:
        handle.update_features(maps, False)
        handle.update_features(maps, True)  # re-enabled: invalid until `rbd object-map rebuild`
        assert handle.flags() & rbd.RBD_FLAG_OBJECT_MAP_INVALID
    refresh(app, image)
    row = volume_in(report(admin), image["id"])
    assert row["method"] == FULL_SCAN and row["used_bytes"] == 2 * OBJECT
    with rbd.Image(rbd_ioctx, image["name"]) as handle:
        handle.rebuild_object_map()
    refresh(app, image)
    assert volume_in(report(admin), image["id"])["method"] == FAST_DIFF


def test_reports_read_the_cache_and_say_how_old_it_is(app, admin, project, db_rows):
    image = create_image(admin, project)
    assert volume_in(report(admin), image["id"])["used_bytes"] is None  # never measured: not guessed
    assert project_in(report(admin), project)["unmeasured_volumes"] == 1
    refresh(app, image)
    first = volume_in(report(admin), image["id"])
    wait_until(lambda: volume_in(report(admin), image["id"])["age_seconds"] > first["age_seconds"], timeout=10,
               what="the figure to age")
    assert volume_in(report(admin), image["id"])["measured_at"] == first["measured_at"]
    with app.app_context():
        usage.refresh(stale_after=usage.MAX_AGE)  # the background loop's round: this figure is fresh
    assert volume_in(report(admin), image["id"])["measured_at"] == first["measured_at"]
    refreshed = report(admin, refresh="true")  # on demand: every volume, now
    # Every volume of the shared database is measured: other tests' (a row whose image was deleted behind robin's
    # back on purpose, say) may fail; this one must not.
    failed = [failure["volume_id"] for failure in refreshed["refresh"]["failed"]]
    assert refreshed["refresh"]["measured"] >= 1 and image["id"] not in failed
    later = volume_in(refreshed, image["id"])
    assert datetime.fromisoformat(later["measured_at"]) > datetime.fromisoformat(first["measured_at"])
    audited = db_rows(select(AuditEvent.action).where(AuditEvent.action == "GET /api/v2/audit/usage"))
    assert audited  # a refresh sets Ceph to work: it is recorded, a plain report is not


def test_project_usage_reads_the_cache_with_its_age(app, admin, project, rbd_ioctx):
    image = create_image(admin, project)
    create_path(admin, project)
    write_image(rbd_ioctx, image["name"], [(0, MiB)])
    calls = ceph_calls()
    never = project_usage(admin, project).json
    assert ceph_calls() == calls
    # Never measured: nothing guessed, and said so; the rows' figures are there all the same.
    assert (never["used_bytes"], never["unmeasured_volumes"], never["measured_at"], never["age_seconds"]) == (
        0, 2, None, None)
    assert never["provisioned_bytes"] == 128 * MiB and never["volumes"] == 2 and never["refresh"] is None
    assert never["remaining_bytes"] == 10 * GiB - 128 * MiB and never["remaining_volumes"] == 18
    refresh(app, image)
    figure = volume_in(report(admin), image["id"])  # the full report asks Ceph for its capacity: before counting
    calls = ceph_calls()
    cached = project_usage(admin, project).json
    assert cached["used_bytes"] == OBJECT and cached["unmeasured_volumes"] == 1
    assert cached["measured_at"] == figure["measured_at"]
    wait_until(lambda: project_usage(admin, project).json["age_seconds"] > cached["age_seconds"], timeout=10,
               what="the figure to age")
    write_image(rbd_ioctx, image["name"], [(8 * MiB, MiB)])  # a second object: not seen until measured
    assert project_usage(admin, project).json["used_bytes"] == OBJECT
    assert ceph_calls() == calls  # every plain answer came from the database


def test_an_admin_refresh_measures_the_project_now(app, admin, project, new_project, rbd_ioctx, db_rows):
    image, path = create_image(admin, project), create_path(admin, project)
    elsewhere = create_image(admin, new_project())
    refresh(app, image)
    before = project_usage(admin, project).json
    write_image(rbd_ioctx, image["name"], [(0, MiB), (8 * MiB, MiB)])
    refreshed = project_usage(admin, project, refresh="true").json
    # The project's two volumes, not the other project's.
    assert refreshed["refresh"]["measured"] == 2 and refreshed["refresh"]["failed"] == []
    assert refreshed["used_bytes"] == 2 * OBJECT and refreshed["unmeasured_volumes"] == 0
    assert datetime.fromisoformat(refreshed["measured_at"]) > datetime.fromisoformat(before["measured_at"])
    assert volume_in(report(admin), path["id"])["method"] == "rbytes"
    assert volume_in(report(admin), elsewhere["id"])["used_bytes"] is None
    audited = db_rows(select(AuditEvent.action).where(AuditEvent.project == project, AuditEvent.action.like("GET %")))
    assert audited == ["GET /api/v2/projects/<project>/usage"]  # a refresh sets Ceph to work: it is recorded


def test_only_admins_may_refresh_a_project(app, as_role, project):
    member, auditor = as_role("member", project), as_role("auditor")
    for client in (member, auditor):
        assert project_usage(client, project).status_code == 200
        calls = ceph_calls()
        refused = project_usage(client, project, refresh="true")
        assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
        assert "needs an admin token" in refused.json["error"]["message"] and ceph_calls() == calls


def test_an_unreachable_cluster_is_reported_not_fatal(admin, tmp_path, ceph_conf):
    keyring = next(line.split("=", 1)[1].strip() for line in open(ceph_conf) if line.strip().startswith("keyring"))
    conf = tmp_path / "dead.conf"
    conf.write_text(f"[global]\nmon host = v1:127.0.0.1:{free_port()}\nkeyring = {keyring}\n")
    name = unique("dead")
    assert admin.post("/api/v2/clusters", json={"name": name, "conf_path": str(conf)}).status_code == 201
    try:
        body = admin.get("/api/v2/audit/usage").json
        dead = next(cluster for cluster in body["clusters"] if cluster["name"] == name)
        assert dead["error"] and dead["total_bytes"] is None and dead["pools"] == []
        assert any(cluster["error"] is None and cluster["total_bytes"] for cluster in body["clusters"])
    finally:
        assert admin.delete(f"/api/v2/clusters/{name}").status_code == 204


def test_only_auditors_and_admins_see_it(as_role, anonymous, project):
    assert as_role("member", project).get("/api/v2/audit/usage").status_code == 403
    assert anonymous.get("/api/v2/audit/usage").status_code == 401
    auditor = as_role("auditor")
    assert auditor.get("/api/v2/audit/usage").status_code == 200
    refused = auditor.get("/api/v2/audit/usage", query_string={"refresh": "true"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"


def test_gauges_per_project_and_pool(app, admin, project, rbd_ioctx):
    image = create_image(admin, project)
    write_image(rbd_ioctx, image["name"], [(0, MiB)])
    refresh(app, image)
    store_totals(app)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in admin.get("/metrics").get_data(as_text=True).splitlines() if not line.startswith("#")}
    assert samples[f'robin_project_used_bytes{{project="{project}"}}'] == OBJECT
    assert samples[f'robin_project_quota_bytes{{project="{project}"}}'] == 10 * GiB
    pools = {name for name in samples if name.startswith(("robin_pool_used_bytes{", "robin_pool_provisioned_bytes{"))}
    assert any('kind="rbd",pool="rbd"' in name for name in pools) and len(pools) >= 2

def test_pool_gauges_sum_every_project_s_live_volumes(app, admin, project, new_project, db_rows):
    create_image(admin, project), create_image(admin, new_project()), create_path(admin, project)
    gone = create_image(admin, project)
    assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{gone['name']}?purge=true").status_code == 204
    store_totals(app)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in admin.get("/metrics").get_data(as_text=True).splitlines() if not line.startswith("#")}
    in_pool = (RbdImage.state != VolumeState.DELETED, RbdImage.pool == "rbd", CephCluster.name == "default")
    volumes = db_rows(select(func.count()).select_from(RbdImage).join(RbdImage.cluster).where(*in_pool))[0]
    provisioned = db_rows(select(func.sum(RbdImage.size_bytes)).join(RbdImage.cluster).where(*in_pool))[0]
    labels = '{cluster="default",kind="rbd",pool="rbd"}'
    assert samples[f"robin_pool_volumes{labels}"] == volumes
    assert samples[f"robin_pool_provisioned_bytes{labels}"] == provisioned


def test_a_refresh_measures_and_stores_batch_by_batch(app, admin, project, monkeypatch):
    made = [create_image(admin, project) for _ in range(3)] + [create_path(admin, project) for _ in range(2)]
    stored = []
    store = usage._store
    monkeypatch.setattr(usage, "REFRESH_BATCH", 2)
    monkeypatch.setattr(usage, "_store", lambda rows: (stored.append(len(rows)), store(rows)))
    with app.app_context():
        assert usage.refresh(project_id=_project_id(app, project)).measured == 5
        assert usage.refresh(project_id=_project_id(app, project), stale_after=usage.MAX_AGE).measured == 0
    # Stored a batch at a time, across the kinds (measured a batch ahead): never more than two batches in memory.
    assert stored == [2, 2, 1]
    body = project_usage(admin, project).json
    assert body["unmeasured_volumes"] == 0 and len(made) == 5


def _project_id(app, name: str) -> int:
    with app.app_context(), db.reading() as session:
        return session.scalar(select(Project.id).where(Project.name == name))


def test_a_scrape_never_calls_ceph_whatever_the_fleet(app, admin, new_project):
    project = new_project(max_bytes=100 * GiB, max_volumes=100)
    made = [create_image(admin, project, size=MiB) for _ in range(50)]
    made += [create_path(admin, project, quota=MiB) for _ in range(10)]
    with app.app_context():  # what the maintenance loop does: measure, survey, probe, and store it all
        assert usage.refresh(volume_ids=[volume["id"] for volume in made]).measured == 60
        drift.find_drift()
        record_cluster_probes()
        usage.store_totals()
    calls = ceph_calls()
    scraped = admin.get("/metrics").get_data(as_text=True)
    assert ceph_calls() == calls
    assert f'robin_project_volumes{{project="{project}"}} 60\n' in scraped
    assert f'robin_project_used_bytes{{project="{project}"}} 0\n' in scraped
    assert 'robin_drift_findings{kind="orphan_image"}' in scraped and "robin_drift_survey_age_seconds " in scraped
    assert 'robin_ceph_cluster_up{cluster="default"} 1.0' in scraped
    assert 'robin_ceph_cluster_probe_age_seconds{cluster="default"}' in scraped


def robin_cli(*args: str, settings) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROBIN_DATABASE_URL": settings.database_url, "ROBIN_CEPH_CONF": settings.ceph_conf,
           "ROBIN_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "robin.cli", "audit", "usage", "--direct", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_table_json_and_csv(app, admin, project, rbd_ioctx, settings):
    image = create_image(admin, project)
    write_image(rbd_ioctx, image["name"], [(0, MiB)])
    refresh(app, image)
    table = robin_cli(settings=settings)
    assert table.returncode == 0, table.stderr
    assert "PROJECTS" in table.stdout and "TOP CONSUMERS" in table.stdout
    assert any(line.startswith(project) and "64.0 MiB" in line for line in table.stdout.splitlines())
    as_json = robin_cli("--json", "--volumes", settings=settings)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert volume_in(body, image["id"])["used_bytes"] == OBJECT and body["generated_at"]
    as_csv = robin_cli("--csv", settings=settings)
    assert as_csv.returncode == 0, as_csv.stderr
    [row] = [r for r in csv.DictReader(io.StringIO(as_csv.stdout)) if r["project"] == project]
    assert row["provisioned_bytes"] == str(64 * MiB) and row["used_bytes"] == str(OBJECT)
    assert robin_cli("--json", "--csv", settings=settings).returncode == 2
