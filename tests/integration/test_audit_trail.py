"""The audit trail cannot be filled, silenced or made to keep secrets (issue 13, attack 5): bodies over
the limit are refused before authentication, redaction is bounded and never fails a request, request ids
are validated, secret-bearing fields are redacted, and a change commits only together with its audit row."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
from sqlalchemy import select

from robin.audit.models import AuditEvent
from robin.clusters.models import CephCluster
from robin.projects.models import Project
from robin.volumes.models import CephfsPath, RbdImage, VolumeState
from tests.conftest import Api, unique
from tests.integration.test_clusters import admin_key, mon_host
from tests.support.server import running_server
from tests.support.triggers import row_trigger

pytestmark = pytest.mark.integration
QUOTA = {"max_bytes": 10 * 2**30, "max_volumes": 10, "max_snapshots": 5}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# "A few KB": what an audit row may hold of any request, however large the request was.
AUDIT_DETAILS_BOUND = 16 * 1024


def events_of(db_rows, request_id: str) -> list[AuditEvent]:
    return db_rows(select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.id))


def project_exists(db_rows, name: str) -> bool:
    return bool(db_rows(select(Project).where(Project.name == name)))


def audit_insert_refused(request_id: str):
    """A real trigger that makes the database refuse the audit row of one request (and only it)."""
    return row_trigger("refuse_" + request_id, "INSERT", "audit_events", f"NEW.request_id = '{request_id}'",
                       refuse="audit row refused")


def test_unauthenticated_huge_body_is_refused_before_storage(robin_url, admin_token, db_rows):
    name = unique("p")
    huge = json.dumps({"name": name, "quota": QUOTA, "padding": "x" * (5 * 2**20)}).encode()
    sized, chunked = unique("huge"), unique("chunked")
    anonymous = requests.post(f"{robin_url}/api/v2/projects", data=huge, timeout=60,
                              headers={"Content-Type": "application/json", "X-Request-Id": sized})
    # A generator body goes out with Transfer-Encoding: chunked, no Content-Length to refuse it by.
    as_admin = requests.post(f"{robin_url}/api/v2/projects", timeout=60,
                             data=(huge[offset:offset + 65536] for offset in range(0, len(huge), 65536)),
                             headers={"Content-Type": "application/json", "X-Request-Id": chunked,
                                      "Authorization": f"Bearer {admin_token}"})
    for response in (anonymous, as_admin):
        assert response.status_code == 413, response.text[:500]
        assert response.json()["error"]["code"] == "request_too_large"
        assert "1048576" in response.json()["error"]["message"]
    assert not project_exists(db_rows, name)
    for request_id in (sized, chunked):
        [event] = events_of(db_rows, request_id)
        assert (event.outcome, event.status_code, event.error_code) == ("failure", 413, "request_too_large")
        assert event.actor == "anonymous"  # refused before the token was even looked at
        assert len(json.dumps(event.details)) < AUDIT_DETAILS_BOUND


def test_chunked_body_within_the_limit_is_read_whole(robin_url, admin_token, db_rows):
    name, request_id = unique("p"), unique("chunked")
    body = json.dumps({"name": name, "quota": QUOTA}).encode()
    in_pieces = (body[offset:offset + 7] for offset in range(0, len(body), 7))
    response = requests.post(f"{robin_url}/api/v2/projects", timeout=30, data=in_pieces,
                             headers={"Content-Type": "application/json", "X-Request-Id": request_id,
                                      "Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 201, response.text
    assert project_exists(db_rows, name)
    assert [e.details["request"]["name"] for e in events_of(db_rows, request_id)] == [name]


def test_deeply_nested_body_is_audited_not_500(admin, new_project, db_rows):
    name = new_project()
    nested = "x"
    for _ in range(600):
        nested = {"x": nested}
    request_id = unique("nested")
    response = admin.delete(f"/api/v2/projects/{name}", json=nested, headers={"X-Request-Id": request_id})
    assert response.status_code == 204, response.json
    assert not project_exists(db_rows, name)
    [event] = events_of(db_rows, request_id)
    assert (event.outcome, event.status_code, event.target) == ("success", 204, f"/api/v2/projects/{name}")
    assert event.details["truncated"] is True
    assert "<truncated" in json.dumps(event.details)
    assert len(json.dumps(event.details)) < AUDIT_DETAILS_BOUND


def test_body_nested_past_the_parser_is_refused_and_audited(admin, db_rows):
    name, request_id = unique("p"), unique("deeper")
    body = f'{{"name": "{name}", "quota": ' + '{"x": ' * 100_000 + "1" + "}" * 100_001
    response = admin.post("/api/v2/projects", data=body,
                          headers={"Content-Type": "application/json", "X-Request-Id": request_id})
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_json"
    assert not project_exists(db_rows, name)
    [event] = events_of(db_rows, request_id)
    assert (event.status_code, event.error_code, event.details["truncated"]) == (400, "invalid_json", True)


@pytest.mark.parametrize("sent", ["r" * 37, "x" * 4000, "two words", "<script>"])
def test_long_request_id_is_replaced_and_audited(admin, db_rows, sent):
    name = unique("p")
    response = admin.post("/api/v2/projects", json={"name": name, "quota": QUOTA}, headers={"X-Request-Id": sent})
    assert response.status_code == 201, response.json
    replacement = response.headers["X-Request-Id"]
    assert UUID.match(replacement), replacement
    [event] = events_of(db_rows, replacement)
    assert (event.outcome, event.status_code, event.details["request"]["name"]) == ("success", 201, name)
    assert not db_rows(select(AuditEvent).where(AuditEvent.request_id == sent))


def test_well_formed_request_id_is_kept(admin, db_rows):
    sent = unique("trace") + ":span-1.2_a"
    response = admin.post("/api/v2/projects", json={"name": unique("p"), "quota": QUOTA},
                          headers={"X-Request-Id": sent})
    assert response.status_code == 201 and response.headers["X-Request-Id"] == sent
    assert [e.status_code for e in events_of(db_rows, sent)] == [201]


def test_cluster_key_not_in_audit(admin, ceph_conf, db_rows):
    from robin.dev.cluster import DevCluster

    session_cluster = DevCluster(ceph_conf.rsplit("/", 1)[0])
    key, name, request_id = admin_key(session_cluster), unique("c"), unique("register")
    response = admin.post("/api/v2/clusters", json={"name": name, "mon_host": mon_host(session_cluster), "key": key},
                          headers={"X-Request-Id": request_id})
    try:
        assert response.status_code == 201, response.json
        assert db_rows(select(CephCluster).where(CephCluster.name == name))
        [event] = events_of(db_rows, request_id)
        assert event.status_code == 201 and event.details["request"]["key"] == "<redacted>"
        assert key not in json.dumps(event.details)
    finally:
        assert admin.delete(f"/api/v2/clusters/{name}").status_code == 204


def test_secret_fields_are_redacted_at_any_depth(admin, db_rows):
    secrets = ["AQB-keyring-secret", "hunter2", "robin_bearer", "s3cr3t", "AQB-cephx"]
    body = {"name": unique("c"), "conf_path": "/etc/ceph/ceph.conf",
            "extra": [{"Keyring": secrets[0], "nested": {"DB_PASSWORD": secrets[1]}},
                      {"apiToken": secrets[2], "x": {"client_secret": secrets[3], "cephx_key": secrets[4]}}]}
    request_id = unique("secrets")
    response = admin.post("/api/v2/clusters", json=body, headers={"X-Request-Id": request_id})
    assert response.status_code == 422  # unknown field: refused, and still audited
    [event] = events_of(db_rows, request_id)
    recorded = json.dumps(event.details)
    assert not [secret for secret in secrets if secret in recorded], recorded
    assert event.details["request"]["conf_path"] == "/etc/ceph/ceph.conf"  # what is no secret stays readable


def test_change_commits_only_with_its_audit_row(admin, db_rows):
    name, request_id = unique("p"), unique("refused")
    with audit_insert_refused(request_id):
        response = admin.post("/api/v2/projects", json={"name": name, "quota": QUOTA},
                              headers={"X-Request-Id": request_id})
    assert response.status_code == 503 and response.json["error"]["code"] == "audit_unavailable"
    assert not project_exists(db_rows, name)  # the change rolled back with its refused audit row
    assert not events_of(db_rows, request_id)


def test_one_audit_row_per_request_across_its_transactions(admin, new_project, db_rows, rbd_ioctx):
    import rbd

    project, image, request_id = new_project(), unique("i"), unique("create")
    # An image is created in two transactions (`creating`, then `available` after Ceph made it).
    response = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": image, "size_bytes": 2**20},
                          headers={"X-Request-Id": request_id})
    assert response.status_code == 201, response.json
    with rbd.Image(rbd_ioctx, image, read_only=True) as created:
        assert created.size() == 2**20
    [event] = events_of(db_rows, request_id)
    assert (event.outcome, event.status_code, event.project) == ("success", 201, project)
    assert event.actor.startswith("token:")


def test_change_of_a_request_whose_worker_died_is_audited_pending(settings, app, admin, admin_token, new_project,
                                                                    db_rows, rbd_ioctx):
    import rbd

    from robin.reconcile.service import reconcile

    project, image, request_id = new_project(), unique("i"), unique("crash")
    # The worker SIGKILLs itself once Ceph made the image: after the `creating` row committed, before any answer.
    with running_server(settings.database_url, settings.ceph_conf, workers=1,
                        extra_env={"ROBIN_FAULT_POINTS": "volume.create", "ROBIN_MAINTENANCE_INTERVAL": "0"}) as url:
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{url}/api/v2/projects/{project}/rbd-images", json={"name": image, "size_bytes": 2**20},
                          headers={"Authorization": f"Bearer {admin_token}", "X-Request-Id": request_id}, timeout=60)
    try:
        [row] = db_rows(select(RbdImage).where(RbdImage.name == image))
        assert row.state is VolumeState.CREATING and image in rbd.RBD().list(rbd_ioctx)
        [event] = events_of(db_rows, request_id)
        assert (event.outcome, event.status_code, event.project) == ("pending", 0, project)
        assert event.details["request"]["name"] == image
    finally:
        with app.app_context():
            reconcile(older_than=timedelta(0))
        assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{image}?purge=true").status_code == 204


def _rows_of_every_table(db_rows) -> dict[str, int]:
    return {model.__name__: len(db_rows(select(model.id))) for model in (Project, RbdImage, CephfsPath, AuditEvent)}


# Each class of bad request: (how to send it, its status and error code). `project` is a fresh project with a
# quota of one volume, already used; `outsider` a member token of another project.
BAD_REQUESTS = {
    "unauthenticated": (lambda c: c.anonymous.post("/api/v2/projects", json={"name": unique("p"), "quota": QUOTA}),
                        401, "unauthenticated"),
    "bad_token": (lambda c: c.anonymous.post("/api/v2/projects", json={"name": unique("p"), "quota": QUOTA},
                                             headers={"Authorization": "Bearer robin_not-a-token"}),
                  401, "unauthenticated"),
    "forbidden": (lambda c: c.outsider.post(f"/api/v2/projects/{c.project}/rbd-images",
                                            json={"name": unique("i"), "size_bytes": 2**20}), 403, "forbidden"),
    "malformed_json": (lambda c: c.admin.post("/api/v2/projects", data='{"name": ',
                                              headers={"Content-Type": "application/json"}), 400, "invalid_json"),
    "wrong_content_type": (lambda c: c.admin.post("/api/v2/projects", data=json.dumps({"name": unique("p"),
                                                                                        "quota": QUOTA}),
                                                  headers={"Content-Type": "text/plain"}),
                           415, "unsupported_media_type"),
    "validation": (lambda c: c.admin.post("/api/v2/projects", json={"name": "Not_A_Name", "quota": QUOTA}),
                   422, "validation_error"),
    "unknown_resource": (lambda c: c.admin.delete(f"/api/v2/projects/{c.project}/rbd-images/{unique('i')}"),
                         404, "volume_not_found"),
    "conflict": (lambda c: c.admin.post("/api/v2/projects", json={"name": c.project, "quota": QUOTA}),
                 409, "project_exists"),
    "too_large": (lambda c: c.admin.post("/api/v2/projects", data=b"x" * (2**20 + 1),
                                         headers={"Content-Type": "application/json"}), 413, "request_too_large"),
    "method_not_allowed": (lambda c: c.admin.put(f"/api/v2/projects/{c.project}", json={"quota": QUOTA}),
                           405, "method_not_allowed"),
    "name_too_long_in_url": (lambda c: c.admin.delete(f"/api/v2/projects/{'p' * 64}"), 404, "project_not_found"),
    "over_quota": (lambda c: c.admin.post(f"/api/v2/projects/{c.project}/rbd-images",
                                          json={"name": unique("i"), "size_bytes": 2**20}), 403, "quota_exceeded"),
}


@pytest.mark.parametrize("kind", BAD_REQUESTS)
def test_every_class_of_bad_request_leaves_exactly_one_audit_row_and_nothing_else(
        kind, app, admin_token, as_role, new_project, db_rows, rbd_ioctx):
    import rbd

    project = new_project(max_volumes=1)
    admin = Api(app.test_client(), admin_token)
    assert admin.post(f"/api/v2/projects/{project}/rbd-images",
                      json={"name": unique("i"), "size_bytes": 2**20}).status_code == 201
    request_id, outsider = unique("bad"), as_role("member", new_project())
    clients = SimpleNamespace(project=project, **{name: _tagged(client, request_id) for name, client in (
        ("admin", admin), ("anonymous", Api(app.test_client(), None)), ("outsider", outsider))})
    images_in_ceph, before = set(rbd.RBD().list(rbd_ioctx)), _rows_of_every_table(db_rows)
    send, status, code = BAD_REQUESTS[kind]
    response = send(clients)
    assert (response.status_code, response.json["error"]["code"]) == (status, code), response.json
    [event] = events_of(db_rows, request_id)
    assert (event.outcome, event.status_code, event.error_code) == ("failure", status, code)
    assert _rows_of_every_table(db_rows) == {**before, "AuditEvent": before["AuditEvent"] + 1}
    assert set(rbd.RBD().list(rbd_ioctx)) == images_in_ceph


class _Tagged(Api):
    """A client that sends one X-Request-Id with every request."""

    def __init__(self, client, token, request_id: str):
        super().__init__(client, token)
        self.request_id = request_id

    def _headers(self, headers):
        return {**super()._headers(headers), "X-Request-Id": self.request_id}


def _tagged(api: Api, request_id: str) -> Api:
    return _Tagged(api.client, api.token, request_id)
