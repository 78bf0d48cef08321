"""The provisioner's RBAC is exactly what its code calls: every call robin/provisioner and robin/kube make on the
kubernetes client's APIs, found with `ast` and mapped to (apiGroup, resource, verb) through the client's own request
paths, is granted by the rules the chart binds to its ServiceAccount, and nothing else is. A new call without a
rule fails here, and so does a rule no call needs."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import kubernetes.client
import pytest

from tests.helm.chart import NAMESPACE, VALUES_FILES, manifests, merged_values, pod_spec, values_of

ROBIN = Path(__file__).resolve().parents[2] / "robin"
PROVISIONER_CODE = [*sorted((ROBIN / "provisioner").glob("*.py")), *sorted((ROBIN / "kube").glob("*.py"))]
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# The Lease lives in the provisioner's own namespace (ProvisionerSettings.lease_namespace: POD_NAMESPACE, which
# the chart sets), so a Role grants it; everything else is in every namespace or cluster-wide.
OWN_NAMESPACE = {("coordination.k8s.io", "leases")}
# Paths outside the API's resources that Kubernetes' own ClusterRole system:public-info-viewer lets everyone GET:
# no rule of the chart's grants them.
PUBLIC_PATHS = {"/version/"}


def api_attributes() -> dict[str, type]:
    """What robin.kube.client.Kube names its API objects: {"core": CoreV1Api, ...}, from its source."""
    tree = ast.parse((ROBIN / "kube" / "client.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr.endswith("Api")):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    found[target.attr] = getattr(kubernetes.client, node.value.func.attr)
    assert found, "robin.kube.client.Kube makes no kubernetes API objects any more"
    return found


def _receiver(node: ast.expr) -> str | None:
    """`core` of self.kube.core / self._kube.core / core (a local bound to it)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def api_calls() -> set[tuple[str, str, bool]]:
    """(API class, method, watched) of every kubernetes client method the provisioner's code uses. A list method
    handed to an informer is watched too: the Informer lists with it, then watches with it (watch=True)."""
    apis = api_attributes()
    calls = set()
    for path in PROVISIONER_CODE:
        tree = ast.parse(path.read_text())
        informed = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
                    and (_receiver(node.func) or "").lower() == "informer" for arg in node.args}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _receiver(node.value) in apis:
                api = apis[_receiver(node.value)]
                if callable(getattr(api, node.attr, None)) and not node.attr.startswith("_"):
                    calls.add((api.__name__, node.attr, id(node) in informed))
    return calls


def request_of(api_name: str, method: str) -> tuple[str, str]:
    """(HTTP method, resource path) the kubernetes client sends for `method`, read from its request builder."""
    source = inspect.getsource(getattr(getattr(kubernetes.client, api_name), f"_{method}_serialize"))
    http = re.search(r"method='([A-Z]+)'", source).group(1)
    path = re.search(r"resource_path='([^']+)'", source).group(1)
    return http, path


def permissions(api_name: str, method: str, watched: bool) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) that `method` needs."""
    http, path = request_of(api_name, method)
    if http == "GET" and path in PUBLIC_PATHS:
        return set()
    prefix = re.match(r"^/api/v1/|^/apis/([^/]+)/[^/]+/", path)
    group = prefix.group(1) or ""
    segments = path[prefix.end():].split("/")
    if segments[:2] == ["namespaces", "{namespace}"] and len(segments) > 2:
        segments = segments[2:]
    resource = segments[0] + (f"/{segments[2]}" if len(segments) > 2 else "")
    by_name = len(segments) > 1
    if http == "GET":
        verbs = {"get"} if by_name else {"list", "watch"} if watched else {"list"}
    else:
        verbs = {VERBS[http] if by_name or http == "POST" else "deletecollection"}
    return {(group, resource, verb) for verb in verbs}


def needed() -> set[tuple[str, str, str]]:
    calls = api_calls()
    return set().union(*(permissions(*call) for call in calls))


def granted(objects: list[dict], service_account: str) -> tuple[set, set]:
    """(cluster-wide, own-namespace) permissions the chart's (Cluster)RoleBindings give `service_account`."""
    def bound(kind: str) -> set[str]:
        return {b["roleRef"]["name"] for b in objects if b["kind"] == kind
                and {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE} in b["subjects"]}

    def rules_of(kind: str, names: set[str]) -> set:
        found = set()
        for role in (o for o in objects if o["kind"] == kind and o["metadata"]["name"] in names):
            for rule in role["rules"]:
                found |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        return found

    return rules_of("ClusterRole", bound("ClusterRoleBinding")), rules_of("Role", bound("RoleBinding"))


def provisioner_values_files():
    for values_file in VALUES_FILES:
        values = merged_values(values_of(values_file))
        if values["provisioner"]["enabled"] and values["rbac"]["create"]:
            yield values_file


def test_the_code_calls_are_found():
    """The derivation sees the calls it must (else an empty set would pass every check below)."""
    calls = needed()
    assert ("", "persistentvolumeclaims", "watch") in calls
    assert ("", "persistentvolumeclaims/status", "patch") in calls
    assert ("coordination.k8s.io", "leases", "create") in calls
    assert ("", "events", "create") in calls


@pytest.mark.parametrize("values_file", list(provisioner_values_files()))
def test_provisioner_rbac_is_exactly_what_its_code_calls(values_file):
    objects = manifests(values_of(values_file))
    deployment = next(o for o in objects if o["kind"] == "Deployment"
                      and o["metadata"]["labels"]["app.kubernetes.io/component"] == "provisioner")
    account = pod_spec(deployment)["serviceAccountName"]
    cluster_wide, own_namespace = granted(objects, account)
    calls = needed()
    missing = {p for p in calls if p not in cluster_wide and not (p[:2] in OWN_NAMESPACE and p in own_namespace)}
    assert not missing, f"the provisioner calls these without a rule: {sorted(missing)}"
    excess = (cluster_wide | own_namespace) - calls
    assert not excess, f"rules no provisioner code needs: {sorted(excess)}"
    assert not {p for p in cluster_wide if p[:2] in OWN_NAMESPACE}, "the Lease is granted outside its namespace"


def test_the_lease_namespace_is_the_pods():
    objects = manifests({})
    deployment = next(o for o in objects if o["kind"] == "Deployment"
                      and o["metadata"]["labels"]["app.kubernetes.io/component"] == "provisioner")
    container = pod_spec(deployment)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert not any(arg.startswith("--lease-namespace") for arg in container["command"])
