"""The dashboard's usage history: a project page with server-rendered SVG charts of the samples real refreshes
stored, and the projects closest to their quota with their forecast dates; who sees what follows the API."""
from __future__ import annotations

from datetime import timedelta

import pytest
import rbd
import requests
from sqlalchemy import insert, select

from robin.audit import history, usage
from robin.audit.models import ProjectUsageSample
from robin.db import db, utcnow
from robin.projects.models import Project
from tests.conftest import make_token, unique
from tests.support.browser import chromium
from tests.support.costs import counting
from tests.ui.test_dashboard import log_in, png_size_and_colours

MiB, GiB = 2**20, 2**30
HALF_HOUR, SAMPLES = timedelta(minutes=30), 3 * 48


def project_id(app, name: str) -> int:
    with app.app_context(), db.reading() as session:
        return session.scalar(select(Project.id).where(Project.name == name))


def growing_history(app, name: str, quota: int) -> None:
    """Three days of samples every half hour up to half an hour ago, provisioned growing from 1 GiB to 2 GiB, used a
    quarter of it."""
    now, pid = utcnow(), project_id(app, name)
    with app.app_context(), db.unit_of_work() as session:
        session.execute(insert(ProjectUsageSample), [
            {"project_id": pid, "step": history.RAW, "at": now - HALF_HOUR * (SAMPLES - n), "volumes": 1,
             "provisioned_bytes": GiB + GiB * n // (SAMPLES - 1), "used_bytes": (GiB + GiB * n // (SAMPLES - 1)) // 4,
             "quota_bytes": quota}
            for n in range(SAMPLES)])


def refresh(app, name: str) -> None:
    with app.app_context():
        usage.refresh(project_id=project_id(app, name))


def logged_in(app, role: str, project: str | None = None):
    client = app.test_client()
    log_in(client, make_token(app, role, project))
    return client


def test_a_member_sees_its_project_page_and_no_other(app, new_project):
    mine, other = new_project(max_bytes=10 * GiB), new_project()
    growing_history(app, mine, 10 * GiB)
    refresh(app, mine)
    member = logged_in(app, "member", mine)
    page = member.get(f"/ui/projects/{mine}?days=7")
    assert page.status_code == 200, page.data
    assert b'data-chart="bytes"' in page.data and b'data-series="provisioned"' in page.data
    assert f'data-points="{SAMPLES + 1}"'.encode() in page.data  # half-hour samples in 21-minute steps: one each
    assert b"<script" not in page.data.split(b"<main>")[1]  # the charts are the server's SVG, no script
    refused = member.get(f"/ui/projects/{other}")
    assert refused.status_code == 403 and b"may not read project" in refused.data and b"<svg" not in refused.data
    missing = logged_in(app, "auditor").get(f"/ui/projects/{unique('p')}")
    assert missing.status_code == 404 and b"does not exist" in missing.data
    with counting(cold_tokens=False) as counted:  # the list reads the stored forecasts: no fit of every project
        dashboard = member.get("/ui/").data.decode()
    assert not [statement for statement in counted.statements if "usage_samples" in statement]
    assert f'<tr data-project="{mine}"><td><a href="/ui/projects/{mine}">' in dashboard  # closest to quota
    assert f'data-project="{other}"' not in dashboard


def test_an_unknown_range_is_a_week(app, new_project):
    project = new_project()
    refresh(app, project)
    page = logged_in(app, "auditor").get(f"/ui/projects/{project}?days=5")
    assert page.status_code == 200 and b'class="current">7 days</a>' in page.data


@pytest.fixture(scope="module")
def browser():
    """Chromium, loopback only."""
    with chromium("robin-ui-charts-") as context:
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("http://127.0.0.1:")
                      else route.abort())
        yield context


def test_the_charts_in_headless_chromium(browser, app, robin_url, admin_token, new_project, rbd_ioctx, tmp_path):
    project = new_project(max_bytes=8 * GiB)
    growing_history(app, project, 8 * GiB)
    image = unique("img")
    created = requests.post(f"{robin_url}/api/v2/projects/{project}/rbd-images", timeout=30,
                            headers={"Authorization": f"Bearer {admin_token}"},
                            json={"name": image, "size_bytes": 4 * GiB})
    assert created.status_code == 201, created.text
    refresh(app, project)  # real samples: the image as created, then with data written
    with rbd.Image(rbd_ioctx, image) as opened:
        opened.write(b"x" * (64 * MiB), 0)
    refresh(app, project)
    page = browser.new_page()
    page.goto(f"{robin_url}/ui/login")
    page.fill("#token", admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{robin_url}/ui/")

    closest = page.locator(f'#closest-to-quota tr[data-project="{project}"]')
    assert closest.count() == 1 and "UTC" in closest.inner_text()
    closest.locator("a").click()
    page.wait_for_url(f"{robin_url}/ui/projects/{project}")

    bytes_chart = page.locator('svg[data-chart="bytes"]')
    assert bytes_chart.is_visible()
    lines = {name: bytes_chart.locator(f'g[data-series="{name}"]') for name in ("quota", "provisioned", "used")}
    # Each written sample is a point (21-minute steps in a week), the two refreshes one or two more.
    assert all(int(line.get_attribute("data-points")) >= SAMPLES + 1 for line in lines.values())
    boxes = {name: line.bounding_box() for name, line in lines.items()}
    chart_box = bytes_chart.bounding_box()
    # Drawn across the week's last three days as lines, inside the chart; the quota above provisioned above used.
    assert all(line.locator("polyline").count() >= 1 for line in lines.values())
    assert boxes["provisioned"]["width"] > chart_box["width"] * 0.3 and boxes["provisioned"]["height"] > 10
    assert all(chart_box["x"] <= box["x"] and box["x"] + box["width"] <= chart_box["x"] + chart_box["width"] + 1
               for box in boxes.values())
    assert boxes["quota"]["y"] < boxes["provisioned"]["y"] < boxes["used"]["y"]
    assert page.locator('svg[data-chart="volumes"] g[data-series="volumes"] polyline').count() >= 1
    provisioned = page.inner_text('#forecast tr[data-figure="provisioned"]')
    assert "UTC" in provisioned and "never" not in provisioned

    shot = tmp_path / "project.png"
    page.screenshot(path=str(shot))
    assert png_size_and_colours(shot.read_bytes())[2] > 8, "the screenshot looks blank"
    page.close()
