"""`/api/v2/docs`: robin's own page and Swagger UI's files, public like the OpenAPI document, naming no other
origin; and no other endpoint answers without a token."""
from __future__ import annotations

import re

import pytest

from robin.api_docs import CONTENT_SECURITY_POLICY

# What answers without a token: the health checks, the OpenAPI document and its documentation page.
PUBLIC = {"/healthz", "/readyz", "/api/v2/openapi.json", "/api/v2/docs", "/api/v2/docs/swagger-ui/<filename>",
          "/api/v2/docs/static/<path:filename>", "/static/<path:filename>"}


def test_the_docs_page_loads_robin_files_only(anonymous):
    response = anonymous.get("/api/v2/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "http" not in CONTENT_SECURITY_POLICY and "*" not in CONTENT_SECURITY_POLICY
    page = response.get_data(as_text=True)
    loaded = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(loaded) == 4 and all(url.startswith("/api/v2/") for url in loaded), loaded
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP would refuse it
    assert 'data-spec-url="/api/v2/openapi.json"' in page


def test_the_start_script_turns_the_online_validator_off(anonymous):
    script = anonymous.get("/api/v2/docs/static/api-docs.js")
    assert script.status_code == 200 and script.mimetype in ("text/javascript", "application/javascript")
    assert "validatorUrl: null" in script.get_data(as_text=True)


@pytest.mark.parametrize("filename, mimetype", [("swagger-ui-bundle.js", "text/javascript"),
                                                ("swagger-ui.css", "text/css"), ("favicon-32x32.png", "image/png")])
def test_swagger_ui_files_are_served_from_the_package(anonymous, filename, mimetype):
    response = anonymous.get(f"/api/v2/docs/swagger-ui/{filename}")
    assert response.status_code == 200 and response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(response.get_data()) > 100


@pytest.mark.parametrize("filename", ["oauth2-redirect.html", "index.css", "..%2Fflask_swagger_ui.py", "VERSION"])
def test_nothing_else_of_the_package_is_served(anonymous, filename):
    assert anonymous.get(f"/api/v2/docs/swagger-ui/{filename}").status_code == 404


def test_every_other_endpoint_wants_a_token(app, anonymous):
    """Each URL rule outside the dashboard (which has its own login) is asked without a token, its parameters
    filled with a made-up name: only the public ones answer anything but 401."""
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC or rule.endpoint.startswith("ui."):
            continue
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "no-such-name", rule.rule)
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        response = getattr(anonymous, method.lower())(url)
        assert response.status_code == 401, (method, rule.rule, response.status_code)
        checked += 1
    assert checked > 30
