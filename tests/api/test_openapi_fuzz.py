"""robin's answers agree with the OpenAPI document it serves (issue 14, item 7).

schemathesis fuzzes every documented operation of a real `robin serve` on the dev cluster, once as an admin
and once as a member of a project, with a bounded number of examples and a fixed seed, and must find no 5xx,
no undocumented status or content type, and no body that breaks its documented schema. The server has its
own database (a fresh SQLite file or PostgreSQL database), so whatever the fuzzer creates, changes or deletes
never touches the rows other tests share; what it put in Ceph is purged afterwards. Every mutating request it
sent must have left exactly one audit row.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select

from robin.audit.models import AuditEvent
from robin.db import upgrade
from robin.errors import ERROR_STATUSES
from tests.conftest import unique
from tests.support.server import SESSION_SECRET_KEY, running_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SEED = 14
# Per operation and role (the coverage phase adds its boundary cases): about two minutes per database.
MAX_EXAMPLES = 10
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
PHASES = "examples,coverage,fuzzing"
RUN_TIMEOUT_S = 600
QUOTA = {"max_bytes": 64 * 2**30, "max_volumes": 50, "max_snapshots": 50}

# Registering a cluster is fuzzed with invalid bodies only: a valid one that names no reachable cluster is
# accepted (robin cannot tell a cluster that is down now from one that never existed) and every later
# request on it then answers 503 ceph_unavailable, truthfully, which would hide real 5xx.
# Health checks judge the generation (e.g. a pattern few strings match), not robin's answers.
CONFIG = f"""
seed = {SEED}
workers = 1
hooks = "tests.api.fuzz_hooks"
suppress-health-check = ["all"]

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

[[operations]]
include-name = "POST /api/v2/clusters"
generation.mode = "negative"
"""


@pytest.fixture(scope="module")
def fuzz_database_url(backend, request, tmp_path_factory) -> str:
    """A database of the fuzz's own, on the session's backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'robin.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("robin_fuzz_" + uuid.uuid4().hex[:12])
    upgrade(url)
    return url


def robin_cli(database_url: str, *args: str) -> str:
    env = {**os.environ, "ROBIN_DATABASE_URL": database_url, "ROBIN_SECRET_KEY": SESSION_SECRET_KEY,
           "ROBIN_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "robin.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def fuzzed(fuzz_database_url, ceph_conf):
    """(url, tokens by role, the made resources by collection) of a server with the fuzz's own database."""
    admin_token = robin_cli(fuzz_database_url, "token", "create", "--direct", "--admin", "--name", "fuzz")
    with running_server(fuzz_database_url, ceph_conf, workers=2,
                        extra_env={"ROBIN_MAINTENANCE_INTERVAL": "0"}) as url:
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {admin_token}"
        try:
            known = _make_resources(api, url)
            member_token = robin_cli(fuzz_database_url, "token", "create", "--direct", "--role", "member", "--project",
                                     known["/api/v2/projects"]["project"], "--name", "fuzz-member")
            yield url, {"admin": admin_token, "member": member_token}, known
        finally:
            _purge_everything(api, url)
            api.close()


def _make_resources(api: requests.Session, url: str) -> dict:
    """A project with an image, a clone, a CephFS path, snapshots, a volume in the trash, and a token: what the fuzzer's
    path parameters name half of the time (tests/api/fuzz_hooks.py)."""
    project, image, path, snap = unique("fz"), unique("i"), unique("d"), unique("s")
    base = f"{url}/api/v2/projects"

    def made(method: str, path_: str, **body) -> None:
        response = api.request(method, base + path_, json=body or None, timeout=60)
        assert response.status_code in (200, 201, 204), response.text

    made("POST", "", name=project, quota=QUOTA)
    made("POST", f"/{project}/rbd-images", name=image, size_bytes=2**22)
    made("POST", f"/{project}/rbd-images/{image}/snapshots", name=snap)
    made("POST", f"/{project}/rbd-images", name=unique("clone"), source={"image": image, "snapshot": snap})
    made("POST", f"/{project}/cephfs-paths", name=path, quota_bytes=2**22)
    made("POST", f"/{project}/cephfs-paths/{path}/snapshots", name=snap)
    trashed = unique("t")
    made("POST", f"/{project}/rbd-images", name=trashed, size_bytes=2**20)
    made("DELETE", f"/{project}/rbd-images/{trashed}")
    # A token to read and revoke, so that the answers about a real token are checked too.
    known_token = api.post(f"{url}/api/v2/tokens", json={"role": "auditor", "name": "fuzz-known"}, timeout=60)
    assert known_token.status_code == 201, known_token.text
    return {
        "/api/v2/tokens": {"token_id": str(known_token.json()["id"])},
        "/api/v2/projects/{project}/rbd-images": {"project": project, "name": image, "snapshot": snap},
        "/api/v2/projects/{project}/cephfs-paths": {"project": project, "name": path, "snapshot": snap},
        "/api/v2/projects": {"project": project},
        "/api/v2/clusters": {"name": "default"},
    }


def _purge_everything(api: requests.Session, url: str) -> None:
    """Purge every volume the fuzz's database holds (clones before their parents: repeat while that helps)."""
    for _ in range(5):
        remaining = 0
        for project in _all(api, f"{url}/api/v2/projects"):
            for collection in ("rbd-images", "cephfs-paths"):
                for trashed in ("false", "true"):
                    listing = f"{url}/api/v2/projects/{project['name']}/{collection}?trashed={trashed}"
                    for volume in _all(api, listing):
                        remaining += 1
                        api.delete(f"{url}/api/v2/projects/{project['name']}/{collection}/{volume['name']}",
                                   params={"purge": "true", "with_snapshots": "true"}, timeout=60)
        if not remaining:
            return


def _all(api: requests.Session, url: str) -> list[dict]:
    items, cursor = [], None
    while True:
        page = api.get(url, params={"limit": 1000, **({"cursor": cursor} if cursor else {})}, timeout=60).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def run_schemathesis(url: str, token: str, known: dict, workdir: Path) -> tuple[subprocess.CompletedProcess, Path]:
    config, request_ids = workdir / "schemathesis.toml", workdir / "request-ids"
    config.write_text(CONFIG)
    request_ids.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUZZ_KNOWN": json.dumps(known),
           "FUZZ_REQUEST_IDS": str(request_ids), "SCHEMATHESIS_HOOKS": ""}
    argv = [str(Path(sys.executable).with_name("st")), "--config-file", str(config), "--no-color", "run",
            f"{url}/api/v2/openapi.json", "--header", f"Authorization: Bearer {token}", "--checks", CHECKS,
            "--phases", PHASES, "--request-timeout", "60", "--output-truncate", "false"]
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return done, request_ids


def audit_rows_by_request(database_url: str, request_ids: list[str]) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            counted = connection.execute(
                select(AuditEvent.request_id, func.count()).where(AuditEvent.request_id.in_(request_ids))
                .group_by(AuditEvent.request_id)).all()
    finally:
        engine.dispose()
    return dict(counted)


# The member first: the admin's fuzz may delete what the member's names.
@pytest.mark.parametrize("role", ["member", "admin"])
def test_answers_agree_with_the_openapi_document(fuzzed, fuzz_database_url, role, tmp_path):
    url, tokens, known = fuzzed
    done, request_ids = run_schemathesis(url, tokens[role], known, tmp_path)
    assert done.returncode == 0, f"schemathesis found answers the document does not promise:\n{done.stdout[-60000:]}" \
                                 f"\n{done.stderr[-5000:]}"
    sent = [line.split(" ", 1) for line in request_ids.read_text().splitlines()]
    assert sent, done.stdout[-5000:]  # the hooks ran: mutating requests were made and recorded
    rows = audit_rows_by_request(fuzz_database_url, [request_id for request_id, _ in sent])
    not_once = [f"{what}: {rows.get(request_id, 0)} rows" for request_id, what in sent if rows.get(request_id) != 1]
    assert not not_once, "mutating requests without exactly one audit row:\n" + "\n".join(not_once[:50])


def test_document_describes_the_error_shape_robin_answers_on_every_operation(admin, anonymous):
    """The errors robin answers are {"error": {code, message, details}}; the document described flask-smorest's
    {code, status, message, errors} and only a `default` response besides 422."""
    document = anonymous.get("/api/v2/openapi.json").json
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert schemas["Error"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert sorted(schemas["ErrorBody"]["required"]) == ["code", "details", "message"]
    answered = [anonymous.get("/api/v2/projects").json, admin.get(f"/api/v2/projects/{unique('p')}").json,
                admin.get("/api/v2/projects?limit=0").json]
    for body in answered:
        assert set(body) == {"error"} and set(body["error"]) == set(schemas["ErrorBody"]["properties"])
    operations = [(f"{method.upper()} {path}", operation) for path, methods in document["paths"].items()
                  for method, operation in methods.items() if method != "parameters"]
    assert not [f"{name} {status}" for name, operation in operations for status in ERROR_STATUSES
                if str(status) not in operation["responses"]]
    assert not [name for name, operation in operations if "default" in operation["responses"]]


def test_volume_fields_that_can_be_null_are_documented_nullable(anonymous):
    schemas = anonymous.get("/api/v2/openapi.json").json["components"]["schemas"]
    for kind in ("RbdImage", "CephfsPath"):
        for field in ("deleted_at", "purge_after", "created_for"):
            assert schemas[kind]["properties"][field].get("nullable") is True, (kind, field)
