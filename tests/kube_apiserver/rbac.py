"""Who a request is, and whether RBAC lets it do what it asks (the real server's RBAC authorizer, for the bearer
tokens of ServiceAccounts).

The server's own token is an administrator's (group system:masters: everything is allowed, as the real server
allows that group before RBAC is asked); a request without credentials is anonymous and, as before RBAC was
modelled, allowed everything (kubectl sends no credentials over plain HTTP). A ServiceAccount's token
(`KubeApiServer.service_account_token`) is `system:serviceaccount:<namespace>:<name>`, in the groups
system:serviceaccounts, system:serviceaccounts:<namespace> and system:authenticated, and may do what the Roles and
ClusterRoles bound to it allow: nothing else (a 403 as the real server words it). Discovery and /version are open
to every authenticated user (the system:discovery and system:public-info-viewer ClusterRoles)."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ApiError
from .resources import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, ROLE_BINDINGS, ROLES


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def unrestricted(self) -> bool:
        return "system:masters" in self.groups or self.name == "system:anonymous"


ADMIN = User("robin-test-admin", ("system:masters", "system:authenticated"))
ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))


def service_account(namespace: str, name: str) -> User:
    return User(f"system:serviceaccount:{namespace}:{name}",
                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))


def verb(method: str, name: str | None, watch: bool) -> str:
    """The request's RBAC verb, as the real server's request info resolver names it."""
    if method == "GET":
        return "get" if name else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]


def _subject_is(subject: dict, user: User) -> bool:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace', '')}:{subject.get('name')}"
    if kind == "User":
        return user.name == subject.get("name")
    return kind == "Group" and subject.get("name") in user.groups


def _rules(store, role_ref: dict, namespace: str) -> list:
    if role_ref.get("kind") == "ClusterRole":
        role = store.objects[CLUSTER_ROLES.key].get(("", role_ref.get("name")))
    else:
        role = store.objects[ROLES.key].get((namespace, role_ref.get("name")))
    return (role or {}).get("rules") or []


def _rule_allows(rule: dict, verb_: str, group: str, resource: str, name: str | None) -> bool:
    return ((verb_ in rule.get("verbs", []) or "*" in rule.get("verbs", []))
            and (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
            and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
            and (not rule.get("resourceNames") or name in rule["resourceNames"]))


def allowed(store, user: User, verb_: str, rt, namespace: str, name: str | None, subresource: str | None) -> bool:
    """RBAC: a ClusterRoleBinding's ClusterRole allows everywhere, a RoleBinding's Role or ClusterRole in the
    binding's namespace only (never on cluster-scoped objects, nor across namespaces)."""
    if user.unrestricted:
        return True
    resource = f"{rt.plural}/{subresource}" if subresource else rt.plural
    bindings = [(binding, "") for binding in store.objects[CLUSTER_ROLE_BINDINGS.key].values()]
    if namespace:
        bindings += [(binding, namespace) for (ns, _), binding in store.objects[ROLE_BINDINGS.key].items()
                     if ns == namespace]
    return any(_rule_allows(rule, verb_, rt.group, resource, name)
               for binding, ns in bindings if any(_subject_is(s, user) for s in binding.get("subjects") or [])
               for rule in _rules(store, binding.get("roleRef") or {}, ns))


def forbidden(user: User, verb_: str, rt, namespace: str, name: str | None, subresource: str | None) -> ApiError:
    resource = f"{rt.plural}/{subresource}" if subresource else rt.plural
    target = f'{rt.group_resource} "{name}"' if name else rt.group_resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    details = {"kind": rt.plural, **({"name": name} if name else {}), **({"group": rt.group} if rt.group else {})}
    return ApiError(403, "Forbidden", f'{target} is forbidden: User "{user.name}" cannot {verb_} resource '
                                      f'"{resource}" in API group "{rt.group}" {scope}', details)
