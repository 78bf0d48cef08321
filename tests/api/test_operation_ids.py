"""Every OpenAPI operation has a unique, stable operationId and a tag: generated clients name their functions by
the ids and group them by the tags, so an id never changes without this test and operation_ids.txt saying so."""
from __future__ import annotations

from pathlib import Path

import pytest
from apispec import APISpec

from robin.api_docs.operation_ids import OperationIds, operation_id

CHECKED_IN = Path(__file__).with_name("operation_ids.txt")
METHODS = ("get", "put", "post", "patch", "delete")


def documented_operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in METHODS]


def test_every_operation_has_a_unique_id_and_a_declared_tag(anonymous):
    spec = anonymous.get("/api/v2/openapi.json").json
    operations = documented_operations(spec)
    ids = [operation.get("operationId") for _, _, operation in operations]
    assert all(ids) and len(set(ids)) == len(ids), sorted(ids)
    declared = {tag["name"] for tag in spec["tags"]}
    for method, path, operation in operations:
        assert operation.get("tags") and set(operation["tags"]) <= declared, (method, path)


def test_operation_ids_match_the_checked_in_list(anonymous):
    spec = anonymous.get("/api/v2/openapi.json").json
    served = {f"{operation['operationId']} {method} {path}" for method, path, operation in documented_operations(spec)}
    checked_in = {line for line in CHECKED_IN.read_text().splitlines() if line and not line.startswith("#")}
    assert served == checked_in, (
        f"ids in the document only: {sorted(served - checked_in)}; in {CHECKED_IN.name} only: "
        f"{sorted(checked_in - served)}. A new operation gets a line there; a changed id breaks every generated "
        "client (docs/api.md, 'Operation ids').")


@pytest.mark.parametrize("method, path, expected", [
    ("get", "/api/v2/projects", "listProjects"),
    ("post", "/api/v2/projects", "createProject"),
    ("patch", "/api/v2/projects/{project}", "updateProject"),
    ("put", "/api/v2/projects/{project}", "replaceProject"),
    ("get", "/api/v2/projects/{project}/usage", "getProjectUsage"),
    ("post", "/api/v2/projects/{project}/rbd-images", "createProjectRbdImage"),
    ("post", "/api/v2/projects/{project}/cephfs-paths/{name}/restore", "restoreProjectCephfsPath"),
    ("post", "/api/v2/projects/{project}/rbd-images/{name}/snapshots/{snapshot}/rollback",
     "rollbackProjectRbdImageSnapshot"),
    ("post", "/api/v2/projects/{project}/rbd-images:adopt", "adoptProjectRbdImage"),
    ("get", "/api/v2/audit/events", "listAuditEvents"),
    ("get", "/api/v2/audit/usage", "getAuditUsage"),
    ("delete", "/v1/device/{name}/user", "wayneV1DeleteDeviceUser"),
])
def test_the_naming_rule(method, path, expected):
    tag = "wayne-v1" if path.startswith("/v1/") else "any"
    assert operation_id(method, path, tag) == expected


def test_an_id_a_view_gives_itself_is_kept():
    spec = APISpec("t", "1", "3.0.3", plugins=[OperationIds()])
    spec.path("/api/v2/tokens", operations={"get": {"operationId": "listApiTokens", "responses": {}},
                                            "post": {"responses": {}}})
    operations = spec.to_dict()["paths"]["/api/v2/tokens"]
    assert operations["get"]["operationId"] == "listApiTokens"
    assert operations["post"]["operationId"] == "createToken"
