"""The dashboard's audit page, /ui/audit: the API's filters and visibility, with the Flask test client and in a
real headless Chromium."""
from __future__ import annotations

import re

import requests

from tests.conftest import make_token, unique
from tests.ui.test_dashboard import browser, log_in  # noqa: F401 (browser: a fixture)

MiB = 2**20


def logged_in(app, role: str, project: str | None = None):
    client = app.test_client()
    assert log_in(client, make_token(app, role, project)).status_code == 302
    return client


def refused_delete(api, project: str) -> str:
    """A failed request naming a volume of `project`: an event, with no Ceph call. Returns the volume's name."""
    name = unique("gone")
    assert api.delete(f"/api/v2/projects/{project}/rbd-images/{name}").status_code == 404
    return name


def event_rows(page: str) -> list[str]:
    return re.findall(r'<tr class="\w+" data-event="\d+">(.*?)</tr>', page, re.S)


def test_the_page_filters_as_the_api_does(app, admin, as_role, new_project):
    project, other = new_project(), new_project()
    mine, theirs = refused_delete(as_role("member", project), project), refused_delete(admin, other)
    auditor = logged_in(app, "auditor")
    page = auditor.get("/ui/audit", query_string={"target": mine})
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    [row] = event_rows(page.get_data(as_text=True))
    assert mine in row and "failure 404" in row and "volume_not_found" in row
    both = auditor.get("/ui/audit", query_string={"outcome": "failure", "project": project}).get_data(as_text=True)
    assert mine in both and theirs not in both
    member = logged_in(app, "member", project)
    shown = member.get("/ui/audit").get_data(as_text=True)
    assert mine in shown and theirs not in shown and other not in shown
    refused = member.get("/ui/audit", query_string={"project": other})
    assert refused.status_code == 403 and "may not read project" in refused.get_data(as_text=True)
    assert not event_rows(member.get("/ui/audit", query_string={"target": theirs}).get_data(as_text=True))


def test_bad_filters_are_said_on_the_page(app):
    auditor = logged_in(app, "auditor")
    for query, said in (({"since": "2026-01-01 10:00"}, "since:"), ({"outcome": "maybe"}, "outcome:"),
                        ({"cursor": "nonsense"}, "cursor")):
        page = auditor.get("/ui/audit", query_string=query)
        assert page.status_code in (400, 422) and said in page.get_data(as_text=True), query
        assert not event_rows(page.get_data(as_text=True))
    # Blank fields (an empty form) filter nothing.
    blank = auditor.get("/ui/audit", query_string={name: "" for name in ("project", "since", "outcome")})
    assert blank.status_code == 200


def test_older_events_are_a_link_that_keeps_the_filters(app, as_role, new_project):
    project = new_project()
    member = as_role("member", project)
    for _ in range(101):
        refused_delete(member, project)
    client = logged_in(app, "auditor")
    first = client.get("/ui/audit", query_string={"project": project}).get_data(as_text=True)
    link = re.search(r'id="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert f"project={project}" in link
    second = client.get(link).get_data(as_text=True)
    assert len(event_rows(first)) == 100 and len(event_rows(second)) == 1
    assert 'id="older"' not in second


def test_without_a_session_the_page_sends_to_login(app):
    response = app.test_client().get("/ui/audit")
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/login")


def test_the_audit_page_in_headless_chromium(browser, robin_url, admin_token, new_project):  # noqa: F811
    project = new_project()
    volume = unique("img")
    headers = {"Authorization": f"Bearer {admin_token}"}
    created = requests.post(f"{robin_url}/api/v2/projects/{project}/rbd-images", timeout=30, headers=headers,
                            json={"name": volume, "size_bytes": MiB})
    assert created.status_code == 201, created.text
    assert requests.delete(f"{robin_url}/api/v2/projects/{project}/rbd-images/{volume}", timeout=30,
                           headers=headers).status_code == 204
    page = browser.new_page()
    page.goto(f"{robin_url}/ui/login")
    page.fill("#token", admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{robin_url}/ui/")
    page.click("#all-events")
    page.wait_for_url(f"{robin_url}/ui/audit")
    page.fill("input[name=target]", volume)
    page.select_option("select[name=outcome]", "success")
    page.click("#filters button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/audit\?.*target="))
    rows = page.locator("#events tbody tr")
    assert rows.count() == 2
    assert "DELETE" in rows.nth(0).inner_text() and "POST" in rows.nth(1).inner_text()
    assert page.input_value("input[name=target]") == volume  # the filters stay filled in
    page.close()
