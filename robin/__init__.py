"""robin: storage management for Ceph."""
from __future__ import annotations

import io

from flask import Flask, request


def create_app(settings=None) -> Flask:
    """The Flask application: settings bound, extensions configured, blueprints registered.

    Imports happen here so that importing the `robin` package (as the CLI does) loads nothing
    else: `robin serve` must set up Prometheus' multiprocess directory before metrics exist.
    """
    from robin import api_docs, crypto, log, ui
    from robin.audit import drift_api, events_api, history_api, usage_api
    from robin.audit import service as audit_service
    from robin.auth import api as tokens_api
    from robin.auth import hooks as auth_hooks
    from robin.clusters import api as clusters_api
    from robin.clusters import service as clusters
    from robin.compat import wayne_v1
    from robin.config import Settings
    from robin.db import db, pool_size_for
    from robin.errors import Api, register_error_handlers
    from robin.health import blp as health_blp
    from robin.migration_records import api as migration_records_api
    from robin.projects import api as projects_api
    from robin.snapshots import api as snapshots_api
    from robin.volumes import api as volumes_api

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        ROBIN_SETTINGS=settings,
        API_TITLE="robin",
        API_VERSION="v2",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v2",
        OPENAPI_JSON_PATH="openapi.json",
        # No OPENAPI_SWAGGER_UI_PATH: robin.api_docs serves /api/v2/docs itself, with no file from elsewhere.
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    db.configure(settings.database_url, pool_size=pool_size_for(settings.threads),
                 lock_timeout=settings.database_lock_timeout)
    crypto.keyring.configure(settings)
    clusters.registry.configure(settings.ceph_timeout)
    clusters.sync_default(settings.ceph_conf, settings.ceph_client_id)
    clusters.encrypt_plain_keys()

    log.install_request_logging(app)
    _refuse_large_bodies(app, settings.max_request_bytes)  # before authentication reads anything
    auth_hooks.install(app)
    _refuse_bodies_not_json(app)  # after authentication: strangers learn nothing of the API's shapes
    audit_service.install(app)
    api = Api(app)
    register_error_handlers(app)  # after Api(): flask-smorest installs its own error format
    for blueprint in (projects_api.blp, volumes_api.rbd_images, volumes_api.cephfs_paths, clusters_api.blp):
        api.register_blueprint(blueprint)
    api.register_blueprint(usage_api.blp)  # usage reports for storage admins
    api.register_blueprint(history_api.blp)  # usage history and forecasts
    api.register_blueprint(volumes_api.adoption_blp)  # rbd-images:adopt, cephfs-paths:adopt
    api.register_blueprint(drift_api.blp)  # drift between the database and Ceph, for storage admins
    api.register_blueprint(events_api.blp)  # the audit trail, filtered and paged
    api.register_blueprint(migration_records_api.blp)  # the record of `robin migrate gluster`
    api.register_blueprint(snapshots_api.listing)  # snapshots across volumes and projects
    api.register_blueprint(volumes_api.listing)  # volumes of both kinds across projects
    api.register_blueprint(tokens_api.blp)  # API tokens, for admins
    wayne_v1.install(app, api)  # the Wayne platform's /v1 API, beside /api/v2
    app.register_blueprint(health_blp)
    api_docs.install(app)  # Swagger UI at /api/v2/docs, from robin's own files
    ui.install(app)  # the read-only dashboard for people at /ui/
    return app


def _refuse_large_bodies(app: Flask, limit: int) -> None:
    """A body over `limit` bytes is answered 413 before anything authenticates, parses or audits it."""
    from robin.errors import RequestTooLarge

    # Werkzeug enforces it too, on the body's every later read.
    app.config["MAX_CONTENT_LENGTH"] = limit

    @app.before_request
    def _within_limit():
        if not _body_fits(limit):
            raise RequestTooLarge(f"request bodies are limited to {limit} bytes (ROBIN_MAX_REQUEST_BYTES)",
                                  details={"max_bytes": limit})


# Wayne's client sends its /v1 bodies without a Content-Type, and /ui/ posts forms: only /api/v2 is strict.
JSON_ONLY_PREFIX = "/api/v2/"


def _refuse_bodies_not_json(app: Flask) -> None:
    """A body sent as anything but JSON is answered 415: read as no body at all, it used to be refused as
    missing every required field, which sends its author looking in the wrong place."""
    from robin.errors import UnsupportedMediaType

    @app.before_request
    def _json_or_nothing():
        if not request.path.startswith(JSON_ONLY_PREFIX) or not _has_body() or request.is_json:
            return
        sent = request.mimetype or "no Content-Type"
        raise UnsupportedMediaType(f"request bodies are JSON: send Content-Type: application/json (not {sent})",
                                   details={"content_type": request.content_type})


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _body_fits(limit: int) -> bool:
    if request.content_length is not None:
        return request.content_length <= limit
    if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return True
    # A chunked body has no length to judge by: read it now, one byte past the limit, while nobody is trusted
    # yet (Werkzeug's own limit would silently cut it), and let the request read what was read.
    body = request.environ["wsgi.input"].read(limit + 1)
    request.environ["wsgi.input"] = io.BytesIO(body)
    return len(body) <= limit
