"""robin's API documentation page, `/api/v2/docs`: Swagger UI on robin's own OpenAPI document, served entirely by
robin, so that it works on a host without the internet.

Swagger UI's files come from the pinned `flask-swagger-ui` package (pyproject.toml), which ships Swagger UI's
built `dist` files: installed with robin like any dependency, they are there in a wheel's venv, the container
image and a development checkout alike, with no download at build or run time. robin uses only those files;
the page and the script that starts Swagger UI are robin's own, free of inline script, so the page's
Content-Security-Policy allows robin's origin and nothing else.
"""
from __future__ import annotations

from functools import cache
from importlib import resources

from flask import Blueprint, Flask, abort, render_template, send_from_directory

blp = Blueprint("api_docs", __name__, url_prefix="/api/v2/docs", template_folder="templates",
                static_folder="static", static_url_path="/static")
# What the page loads of Swagger UI's files; nothing else of the package is served.
SWAGGER_UI_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
# Swagger UI's stylesheet draws its icons as data: images; it fetches the document and sends "Try it out"
# requests to robin itself (connect-src); no font, frame, form target or other origin.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
# Anyone may read the documentation, as they may read /api/v2/openapi.json (robin.auth.hooks).
PUBLIC_ENDPOINTS = frozenset({"api_docs.page", "api_docs.swagger_ui", "api_docs.static"})


def install(app: Flask) -> None:
    swagger_ui_dir()  # an install without the package fails at start, not at a reader's first visit
    app.register_blueprint(blp)


@cache
def swagger_ui_dir() -> str:
    return str(resources.files("flask_swagger_ui") / "dist")


@blp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blp.get("")
def page():
    return render_template("api_docs/swagger_ui.html")


@blp.get("/swagger-ui/<filename>")
def swagger_ui(filename: str):
    if filename not in SWAGGER_UI_FILES:
        abort(404)
    return send_from_directory(swagger_ui_dir(), filename)
