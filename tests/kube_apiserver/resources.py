"""The resource types this server knows, and the discovery documents describing them."""
from __future__ import annotations

from dataclasses import dataclass

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True, eq=False)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    create_on_update: bool = False  # PUT to a missing object creates it (leases, events)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()  # "endpoints" for Endpoints, as the real server says


NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",))
PVCS = ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",))
PVS = ResourceType("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), ("status",))
EVENTS = ResourceType("", "v1", "events", "Event", True, ("ev",), (), True)
STORAGE_CLASSES = ResourceType("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",))
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, (), (), True)
PODS = ResourceType("", "v1", "pods", "Pod", True, ("po",), ("status",))
ENDPOINTS = ResourceType("", "v1", "endpoints", "Endpoints", True, ("ep",))
SECRETS = ResourceType("", "v1", "secrets", "Secret", True)
CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",))
SERVICE_ACCOUNTS = ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",))
_RBAC = "rbac.authorization.k8s.io"
ROLES = ResourceType(_RBAC, "v1", "roles", "Role", True)
CLUSTER_ROLES = ResourceType(_RBAC, "v1", "clusterroles", "ClusterRole", False)
ROLE_BINDINGS = ResourceType(_RBAC, "v1", "rolebindings", "RoleBinding", True)
CLUSTER_ROLE_BINDINGS = ResourceType(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False)

RESOURCES = [NAMESPACES, PVCS, PVS, EVENTS, STORAGE_CLASSES, LEASES, PODS, ENDPOINTS, SECRETS, CONFIG_MAPS,
             SERVICE_ACCOUNTS, ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS]
BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in RESOURCES}
GROUPS = sorted({(rt.group, rt.version) for rt in RESOURCES if rt.group})


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(group: str, version: str) -> dict:
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list() -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, v) for g, v in GROUPS]}


def api_group(group: str) -> dict | None:
    for g, v in GROUPS:
        if g == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(g, v)}
    return None


def api_resource_list(group: str, version: str) -> dict | None:
    chosen = [rt for rt in RESOURCES if rt.group == group and rt.version == version]
    if not chosen:
        return None
    resources = []
    for rt in chosen:
        entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                 "verbs": VERBS if rt is not NAMESPACES else [v for v in VERBS if v != "deletecollection"]}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        resources.append(entry)
        for sub in rt.subresources:
            resources.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}


DEFAULT_VERSION = "1.32.0"


def version_info(version: str = DEFAULT_VERSION) -> dict:
    major, minor, _ = version.split(".", 2)
    return {"major": major, "minor": minor, "gitVersion": f"v{version}-robin-test", "gitCommit": "0" * 40,
            "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.0",
            "compiler": "gc", "platform": "linux/amd64"}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_root() -> dict:
    """The /openapi/v3 index. Only enough for kubectl to see, per kind, that PATCH accepts `fieldValidation`,
    which makes it validate on the server (`schemas`) instead of downloading schemas."""
    gvs = sorted({(rt.group, rt.version) for rt in RESOURCES})
    return {"paths": {_gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash=robin1"}
                      for g, v in gvs}}


def openapi_v3_group_version(group: str, version: str) -> dict | None:
    chosen = [rt for rt in RESOURCES if rt.group == group and rt.version == version]
    if not chosen:
        return None
    paths = {}
    for rt in chosen:
        prefix = "/" + _gv_path(group, version) + ("/namespaces/{namespace}" if rt.namespaced else "")
        operation = {
            "operationId": f"patch{rt.kind}",
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": rt.kind},
            "parameters": [{"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                           for name in ("dryRun", "fieldManager", "fieldValidation", "force")],
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"{prefix}/{rt.plural}/{{name}}"] = {"patch": operation}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0-robin-test"}, "paths": paths}
