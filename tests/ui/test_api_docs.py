"""`/api/v2/docs` on a machine without the internet: a headless Chromium that can reach nothing but robin on
127.0.0.1 renders the operation list, asks no other origin for anything and meets no CSP refusal."""
from __future__ import annotations

import socket

import pytest

from tests.support.browser import chromium


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on: bound, then released, so a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def offline_args() -> list[str]:
    """Chromium as on an air-gapped host: every request but one to 127.0.0.1 goes to a proxy that refuses
    connections, and no other host name resolves."""
    return [f"--proxy-server=http://127.0.0.1:{closed_port()}", "--proxy-bypass-list=127.0.0.1",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def offline_browser():
    """Chromium with the network off; records every URL it asked for."""
    with chromium("robin-docs-chromium-", offline_args()) as context:
        context.requested = []
        context.on("request", lambda request: context.requested.append(request.url))
        yield context


def try_list_projects(page, token: str) -> str:
    """Authorize with `token`, then "Try it out" on listProjects: the status robin answered, as the page shows it."""
    page.click("button.authorize")
    bearer = page.locator(".modal-ux .auth-container").filter(has_text="bearer")
    bearer.locator("input").fill(token)
    bearer.locator("button[type=submit]").click()
    page.click(".modal-ux button.btn-done")
    operation = page.locator("#operations-projects-listProjects")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=60_000)
    return status.inner_text().strip()


def test_the_api_docs_render_without_the_internet(offline_browser, robin_url, admin_token):
    page = offline_browser.new_page()
    problems = []
    page.on("console", lambda message: problems.append(f"{message.text} ({message.location.get('url')})")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{robin_url}/api/v2/docs")
    # The operation list: Swagger UI draws one block per operation, each with its path.
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/v2/projects/{project}/rbd-images" in path for path in paths), paths
    assert page.locator(".opblock-tag").count() >= 5  # grouped by tag
    assert try_list_projects(page, admin_token) == "200"  # the CSP lets the page call robin, and nothing else
    elsewhere = [url for url in offline_browser.requested if not url.startswith(robin_url + "/")]
    assert elsewhere == [], "the docs page asked another origin"
    assert problems == [], "the page logged errors (a CSP refusal is one)"
    page.close()
