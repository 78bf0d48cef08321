"""Who may call what: every route of /api/v2 and /v1, with every kind of token, from one table.

The table (ROUTES) has an entry for each method of each route in the app's url_map: a route added without
one fails test_every_route_has_an_entry. An entry says which roles may call it; every other role is refused,
and the test checks the status, the stable error code, that the refusal is audited (mutating calls), and that
nothing changed in Ceph (RBD images, their sizes, snapshots, trash and ownership records; CephFS directories,
quota and owner xattrs, snapshots) nor in the database (every table but the audit trail). The roles allowed to
read are answered 200 (a listing, without the other project's names for a tenant). The roles allowed to write
make the write's probe: the same call naming a missing or taken name, which passes authorization, is refused by
the lookup after it and changes nothing either (the writes themselves are the other tests' business: they would
change the fixtures this module shares).

Tokens expire (`robin token create --expires-in`): an expired token is one of the roles.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import NamedTuple

import pytest
import rados
import rbd
from sqlalchemy import func, select, update

import robin.models  # noqa: F401  (every table in Base.metadata)
from robin.auth.models import ApiToken, Role
from robin.auth.service import create_token, revoke_token, token_cache
from robin.ceph.cephfs_ops import OWNER_XATTR
from robin.ceph.rbd_ops import DIRECTORY_OBJECT
from robin.db import Base, db, utcnow
from tests.conftest import Api, unique

pytestmark = pytest.mark.integration
MiB = 2**20

# admin, a member of the project the calls name, a member of another project, an auditor, a metrics scraper,
# and the three ways in that are no identity at all.
ROLES = ("admin", "member", "other", "auditor", "metrics", "node", "none", "revoked", "expired")
ANONYMOUS = {"none": (401, "unauthenticated"), "revoked": (401, "unauthenticated"),
             "expired": (401, "token_expired")}
FORBIDDEN = (403, "forbidden")
V1_MISSING = (404, "volume_not_found")  # /v1 answers a volume the token may not read as a missing one


class Call(NamedTuple):
    method: str
    path: str  # with {home}, {image}, ... filled from the Site
    body: dict | None = None
    query: dict | None = None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One call of a route and what each role gets: allowed roles a 200/201 (reads are made; writes are not),
    FILTERED roles a 200 that names nothing of the home project, every other role its refusal. A write's `probe`
    is the call as the allowed roles make it to show they pass authorization: one that changes nothing (a
    missing or taken name), with the answer it gets."""
    call: Call
    allowed: frozenset
    refusals: dict
    filtered: frozenset = frozenset()
    probe: tuple[Call, tuple[int, str]] | None = None

    def outcome(self, role: str):
        if role in self.allowed:
            return "allowed"
        if role in self.filtered:
            return "filtered"
        return self.refusals.get(role) or ANONYMOUS[role]


def entry(call: Call, allowed: str, refused: dict | None = None, filtered: str = "") -> Entry:
    allowed_roles, refused, filtered_roles = frozenset(allowed.split()), dict(refused or {}), set(filtered.split())
    # A node token, like a metrics token, belongs to no project and may do one narrow thing: unless an entry
    # says otherwise, it gets what the metrics token gets.
    if "node" not in allowed_roles | refused.keys() | filtered_roles:
        if "metrics" in filtered_roles:
            filtered_roles.add("node")
        elif "metrics" in refused:
            refused["node"] = refused["metrics"]
    return Entry(call, allowed_roles, refused, frozenset(filtered_roles))


def project_read(call: Call) -> Entry:
    return entry(call, "admin member auditor", {"other": FORBIDDEN, "metrics": FORBIDDEN, "node": FORBIDDEN})


def project_write(call: Call) -> Entry:
    return entry(call, "admin member", {"other": FORBIDDEN, "auditor": FORBIDDEN, "metrics": FORBIDDEN,
                                        "node": FORBIDDEN})


def admin_only(call: Call) -> Entry:
    return entry(call, "admin", {role: FORBIDDEN for role in ("member", "other", "auditor", "metrics", "node")})


def every_project_read(call: Call) -> Entry:
    """Reports and clusters that name every project: admins and auditors."""
    return entry(call, "admin auditor", {role: FORBIDDEN for role in ("member", "other", "metrics", "node")})


def v1_read(call: Call) -> Entry:
    return entry(call, "admin member auditor", {"other": V1_MISSING, "metrics": V1_MISSING, "node": V1_MISSING})


def v1_write(call: Call) -> Entry:
    return entry(call, "admin member", {"other": V1_MISSING, "metrics": V1_MISSING, "node": V1_MISSING,
                                        "auditor": FORBIDDEN})


def public(call: Call) -> Entry:
    return entry(call, " ".join(ROLES))


def probed(written: Entry, answer: tuple[int, str], path: str | None = None, body: dict | None = None) -> Entry:
    """The write with its probe: the same call with another path or body, answered `answer`."""
    call = written.call._replace(path=path or written.call.path,
                                 body=written.call.body if body is None else body)
    return dataclasses.replace(written, probe=(call, answer))


NO_VOLUME, NO_SNAPSHOT = (404, "volume_not_found"), (404, "snapshot_not_found")
NAME_TAKEN, NOT_IN_TRASH, NOT_IN_CEPH = (409, "name_taken"), (404, "not_in_trash"), (404, "not_found_in_ceph")


P = "/api/v2/projects/{home}"
RBD, FS = P + "/rbd-images", P + "/cephfs-paths"
IMAGE, PATH = RBD + "/{image}", FS + "/{path}"
GROW = {"size_bytes": 16 * MiB}
QUOTA = {"quota": {"max_bytes": 2**40, "max_volumes": 1000, "max_snapshots": 1000}}
RECORD = {"source": "gluster:vol/brick", "volume_kind": "rbd", "volume_name": "{image}", "status": "verified"}
DEVICE = {"user": "someone", "password": "a-Password-9"}
RBD_TYPE, FS_TYPE = {"type": "rbd"}, {"type": "cephfs"}
CLONE_SOURCE = {"image": "{image}", "snapshot": "{snap}"}

# (rule, method) -> the calls made of it. Every route of the app has its key here.
ROUTES: dict[tuple[str, str], list[Entry]] = {
    ("/api/v2/projects", "GET"): [
        entry(Call("GET", "/api/v2/projects"), "admin member auditor", filtered="other metrics")],
    ("/api/v2/projects", "POST"): [probed(admin_only(Call("POST", "/api/v2/projects", {"name": "{new}", **QUOTA})),
                                          (409, "project_exists"), body={"name": "{home}", **QUOTA})],
    ("/api/v2/projects/<project>", "GET"): [project_read(Call("GET", P))],
    ("/api/v2/projects/<project>", "PATCH"): [
        probed(admin_only(Call("PATCH", P, QUOTA)), (404, "project_not_found"), "/api/v2/projects/{missing}")],
    ("/api/v2/projects/<project>", "DELETE"): [
        probed(admin_only(Call("DELETE", "/api/v2/projects/{empty}")), (404, "project_not_found"),
               "/api/v2/projects/{missing}")],
    ("/api/v2/projects/<project>/usage", "GET"): [
        project_read(Call("GET", P + "/usage")),
        admin_only(Call("GET", P + "/usage", query={"refresh": "true"}))],
    ("/api/v2/projects/<project>/migrations", "GET"): [project_read(Call("GET", P + "/migrations"))],
    ("/api/v2/projects/<project>/migrations", "POST"): [project_write(Call("POST", P + "/migrations", RECORD))],
    ("/api/v2/projects/<project>/rbd-images", "GET"): [
        project_read(Call("GET", RBD)), project_read(Call("GET", RBD, query={"trashed": "true"}))],
    ("/api/v2/projects/<project>/rbd-images", "POST"): [
        probed(project_write(Call("POST", RBD, {"name": "{new}", "size_bytes": MiB})), NAME_TAKEN,
               body={"name": "{clone}", "size_bytes": MiB}),
        probed(project_write(Call("POST", RBD, {"name": "{new}", "source": CLONE_SOURCE})), NAME_TAKEN,
               body={"name": "{clone}", "source": CLONE_SOURCE})],
    ("/api/v2/projects/<project>/rbd-images/<name>", "GET"): [
        project_read(Call("GET", IMAGE)), project_read(Call("GET", IMAGE, query={"with_used": "true"}))],
    ("/api/v2/projects/<project>/rbd-images/<name>", "PATCH"): [
        probed(project_write(Call("PATCH", IMAGE, GROW)), NO_VOLUME, RBD + "/{missing}")],
    ("/api/v2/projects/<project>/rbd-images/<name>", "DELETE"): [
        probed(project_write(Call("DELETE", IMAGE, query={"with_snapshots": "true"})), NO_VOLUME, RBD + "/{missing}"),
        probed(admin_only(Call("DELETE", IMAGE, query={"with_snapshots": "true", "purge": "true"})), NO_VOLUME,
               RBD + "/{missing}")],
    ("/api/v2/projects/<project>/rbd-images/<name>/restore", "POST"): [
        probed(project_write(Call("POST", RBD + "/{trashed_image}/restore")), NOT_IN_TRASH,
               RBD + "/{missing}/restore")],
    ("/api/v2/projects/<project>/rbd-images/<name>/purge", "POST"): [
        probed(admin_only(Call("POST", RBD + "/{trashed_image}/purge", query={"id": "{trashed_image_id}"})),
               NOT_IN_TRASH, RBD + "/{missing}/purge")],
    ("/api/v2/projects/<project>/rbd-images/<name>/flatten", "POST"): [
        probed(project_write(Call("POST", RBD + "/{clone}/flatten")), NO_VOLUME, RBD + "/{missing}/flatten")],
    ("/api/v2/projects/<project>/rbd-images/<name>/snapshots", "GET"): [
        project_read(Call("GET", IMAGE + "/snapshots"))],
    ("/api/v2/projects/<project>/rbd-images/<name>/snapshots", "POST"): [
        probed(project_write(Call("POST", IMAGE + "/snapshots", {"name": "{new}"})), NO_VOLUME,
               RBD + "/{missing}/snapshots")],
    ("/api/v2/projects/<project>/rbd-images/<name>/snapshots/<snapshot>", "GET"): [
        project_read(Call("GET", IMAGE + "/snapshots/{snap}"))],
    ("/api/v2/projects/<project>/rbd-images/<name>/snapshots/<snapshot>", "DELETE"): [
        probed(project_write(Call("DELETE", IMAGE + "/snapshots/{snap}")), NO_SNAPSHOT,
               IMAGE + "/snapshots/{missing}")],
    ("/api/v2/projects/<project>/rbd-images/<name>/snapshots/<snapshot>/rollback", "POST"): [
        probed(project_write(Call("POST", IMAGE + "/snapshots/{snap}/rollback")), NO_SNAPSHOT,
               IMAGE + "/snapshots/{missing}/rollback")],
    ("/api/v2/projects/<project>/rbd-images:adopt", "POST"): [
        probed(admin_only(Call("POST", P + "/rbd-images:adopt", {"name": "{orphan_image}"})), NOT_IN_CEPH,
               body={"name": "{missing}"})],
    ("/api/v2/projects/<project>/cephfs-paths", "GET"): [
        project_read(Call("GET", FS)), project_read(Call("GET", FS, query={"trashed": "true"}))],
    ("/api/v2/projects/<project>/cephfs-paths", "POST"): [
        probed(project_write(Call("POST", FS, {"name": "{new}", "quota_bytes": MiB})), NAME_TAKEN,
               body={"name": "{path}", "quota_bytes": MiB})],
    ("/api/v2/projects/<project>/cephfs-paths/<name>", "GET"): [
        project_read(Call("GET", PATH)), project_read(Call("GET", PATH, query={"with_used": "true"}))],
    ("/api/v2/projects/<project>/cephfs-paths/<name>", "PATCH"): [
        probed(project_write(Call("PATCH", PATH, {"quota_bytes": 16 * MiB})), NO_VOLUME, FS + "/{missing}")],
    ("/api/v2/projects/<project>/cephfs-paths/<name>", "DELETE"): [
        probed(project_write(Call("DELETE", PATH, query={"with_snapshots": "true"})), NO_VOLUME, FS + "/{missing}"),
        probed(admin_only(Call("DELETE", PATH, query={"with_snapshots": "true", "purge": "true"})), NO_VOLUME,
               FS + "/{missing}")],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/restore", "POST"): [
        probed(project_write(Call("POST", FS + "/{trashed_path}/restore")), NOT_IN_TRASH, FS + "/{missing}/restore")],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/purge", "POST"): [
        probed(admin_only(Call("POST", FS + "/{trashed_path}/purge", query={"id": "{trashed_path_id}"})),
               NOT_IN_TRASH, FS + "/{missing}/purge")],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/snapshots", "GET"): [
        project_read(Call("GET", PATH + "/snapshots"))],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/snapshots", "POST"): [
        probed(project_write(Call("POST", PATH + "/snapshots", {"name": "{new}"})), NO_VOLUME,
               FS + "/{missing}/snapshots")],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/snapshots/<snapshot>", "GET"): [
        project_read(Call("GET", PATH + "/snapshots/{fs_snap}"))],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/snapshots/<snapshot>", "DELETE"): [
        probed(project_write(Call("DELETE", PATH + "/snapshots/{fs_snap}")), NO_SNAPSHOT,
               PATH + "/snapshots/{missing}")],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/snapshots/<snapshot>/rollback", "POST"): [
        # CephFS paths have no rollback: every token is told so (400) before anything is looked up, which tells
        # nobody anything about the project.
        entry(Call("POST", PATH + "/snapshots/{fs_snap}/rollback"), "",
              dict.fromkeys(("admin", "member", "other", "auditor", "metrics"), (400, "rollback_not_supported")))],
    ("/api/v2/projects/<project>/cephfs-paths/<name>/authorize", "POST"): [
        # A node's: the path's own cephx user, for the host that mounts it; never a tenant's (the directory
        # layout's OSD cap reaches the whole data pool).
        probed(entry(Call("POST", PATH + "/authorize"), "admin node",
                     dict.fromkeys(("member", "other", "auditor", "metrics"), FORBIDDEN)),
               NO_VOLUME, FS + "/{missing}/authorize")],
    ("/api/v2/projects/<project>/usage/history", "GET"): [project_read(Call("GET", P + "/usage/history"))],
    ("/api/v2/audit/usage/forecast", "GET"): [every_project_read(Call("GET", "/api/v2/audit/usage/forecast"))],
    ("/api/v2/projects/<project>/cephfs-paths:adopt", "POST"): [
        probed(admin_only(Call("POST", P + "/cephfs-paths:adopt", {"name": "{orphan_path}"})), NOT_IN_CEPH,
               body={"name": "{missing}"})],
    ("/api/v2/volumes", "GET"): [
        entry(Call("GET", "/api/v2/volumes"), "admin member auditor", {"metrics": FORBIDDEN}, filtered="other"),
        project_read(Call("GET", "/api/v2/volumes", query={"project": "{home}"}))],
    ("/api/v2/snapshots", "GET"): [
        entry(Call("GET", "/api/v2/snapshots"), "admin member auditor", {"metrics": FORBIDDEN}, filtered="other"),
        project_read(Call("GET", "/api/v2/snapshots", query={"project": "{home}"}))],
    ("/api/v2/audit/events", "GET"): [
        entry(Call("GET", "/api/v2/audit/events"), "admin member auditor", {"metrics": FORBIDDEN},
              filtered="other"),
        project_read(Call("GET", "/api/v2/audit/events", query={"project": "{home}"}))],
    ("/api/v2/audit/usage", "GET"): [
        every_project_read(Call("GET", "/api/v2/audit/usage")),
        admin_only(Call("GET", "/api/v2/audit/usage", query={"refresh": "true"}))],
    ("/api/v2/audit/drift", "GET"): [
        every_project_read(Call("GET", "/api/v2/audit/drift")),
        admin_only(Call("GET", "/api/v2/audit/drift", query={"full": "true"}))],
    ("/api/v2/clusters", "GET"): [every_project_read(Call("GET", "/api/v2/clusters"))],
    ("/api/v2/clusters", "POST"): [
        probed(admin_only(Call("POST", "/api/v2/clusters", {"name": "{new}", "conf_path": "{ceph_conf}"})),
               (409, "cluster_exists"), body={"name": "{alias}", "conf_path": "{ceph_conf}"})],
    ("/api/v2/clusters/<name>", "GET"): [every_project_read(Call("GET", "/api/v2/clusters/{alias}"))],
    ("/api/v2/clusters/<name>", "DELETE"): [
        probed(admin_only(Call("DELETE", "/api/v2/clusters/{alias}")), (404, "cluster_not_found"),
               "/api/v2/clusters/{missing}")],
    # Tokens: admins only. A token that may make tokens may make an admin one, so no other role sees them.
    ("/api/v2/tokens", "GET"): [admin_only(Call("GET", "/api/v2/tokens"))],
    ("/api/v2/tokens", "POST"): [
        probed(admin_only(Call("POST", "/api/v2/tokens", {"role": "member", "project": "{home}"})),
               (404, "project_not_found"), body={"role": "member", "project": "{missing}"})],
    ("/api/v2/tokens/<token_id>", "GET"): [admin_only(Call("GET", "/api/v2/tokens/{token}"))],
    ("/api/v2/tokens/<token_id>", "DELETE"): [
        probed(admin_only(Call("DELETE", "/api/v2/tokens/{token}")), (404, "token_not_found"),
               "/api/v2/tokens/{missing_token}")],
    ("/api/v2/openapi.json", "GET"): [public(Call("GET", "/api/v2/openapi.json"))],
    ("/api/v2/docs", "GET"): [public(Call("GET", "/api/v2/docs"))],
    ("/api/v2/docs/static/<path:filename>", "GET"): [public(Call("GET", "/api/v2/docs/static/api-docs.js"))],
    ("/api/v2/docs/swagger-ui/<filename>", "GET"): [public(Call("GET", "/api/v2/docs/swagger-ui/swagger-ui.css"))],
    # Wayne's /v1: the platform's project is the home project here.
    ("/v1/images", "GET"): [
        entry(Call("GET", "/v1/images", query={"type": "all"}), "admin member auditor", filtered="other metrics")],
    ("/v1/image", "PUT"): [
        entry(Call("PUT", "/v1/image", {"name": "{new}", "size": 1}, RBD_TYPE), "admin member",
              {"other": FORBIDDEN, "auditor": FORBIDDEN, "metrics": FORBIDDEN})],
    ("/v1/snaps/<name>", "GET"): [v1_read(Call("GET", "/v1/snaps/{image}"))],
    ("/v1/snaps/<name>", "DELETE"): [v1_write(Call("DELETE", "/v1/snaps/{image}"))],
    ("/v1/snap/<name>/<version>", "PUT"): [v1_write(Call("PUT", "/v1/snap/{image}/{new}"))],
    ("/v1/snap/<name>/<version>", "DELETE"): [v1_write(Call("DELETE", "/v1/snap/{image}/{snap}"))],
    ("/v1/snap/<name>/<version>", "POST"): [v1_write(Call("POST", "/v1/snap/{image}/{snap}"))],
    ("/v1/device/<name>", "PUT"): [v1_write(Call("PUT", "/v1/device/{image}", DEVICE, RBD_TYPE)),
                                   v1_write(Call("PUT", "/v1/device/{path}", DEVICE, FS_TYPE))],
    ("/v1/device/<name>", "DELETE"): [v1_write(Call("DELETE", "/v1/device/{image}", query=RBD_TYPE))],
    ("/v1/device/<name>/status", "GET"): [v1_read(Call("GET", "/v1/device/{image}/status", query=RBD_TYPE))],
    ("/v1/device/<name>/user", "DELETE"): [v1_write(Call("DELETE", "/v1/device/{image}/user", query=RBD_TYPE))],
    ("/v1/device/<name>/verify", "GET"): [v1_write(Call("GET", "/v1/device/{image}/verify", query=RBD_TYPE))],
}
# Writes whose allowed call has no answer that changes nothing: a migration record is taken as it is sent, and /v1's
# writes answer a name they cannot find as they answer a token that may not read it.
UNPROBED = {("/api/v2/projects/<project>/migrations", "POST")} | {key for key in ROUTES if key[0].startswith("/v1/")}
CALLS = [(key, index) for key, entries in ROUTES.items() for index in range(len(entries))]
# A GET that starts work is audited and changes state like a write: it is not made for allowed roles either.
STARTS_WORK = {("/v1/device/<name>/verify", "GET")}


def covered_prefixes(rule: str) -> bool:
    return rule.startswith(("/api/v2/", "/v1/"))


def test_every_route_has_an_entry(app):
    """A new route of /api/v2 or /v1 without an entry here fails: its authorization is then in the matrix."""
    served = {(rule.rule, method) for rule in app.url_map.iter_rules() if covered_prefixes(rule.rule)
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served - ROUTES.keys() == set(), "routes without an entry in ROUTES"
    assert ROUTES.keys() - served == set(), "entries in ROUTES for routes the app does not serve"


# --- the fixtures every call of the module shares -------------------------------------------------

@dataclasses.dataclass
class Site:
    names: dict  # what the calls' {placeholders} are filled with
    tokens: dict  # role -> secret (None: no token)


def _token(app, role: Role, project: str | None = None, **how) -> tuple[str, int]:
    with app.app_context():
        secret, token = create_token(role, project=project, name=f"matrix-{role.value}", **how)
    return secret, token.id


def _tokens(app, home: str, other: str) -> dict:
    revoked, revoked_id = _token(app, Role.MEMBER, home)
    expired, expired_id = _token(app, Role.MEMBER, home, expires_in=timedelta(days=1))
    with app.app_context():
        revoke_token(revoked_id)
    with db.writing() as connection:
        connection.execute(update(ApiToken).where(ApiToken.id == expired_id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    token_cache.clear()
    return {"admin": _token(app, Role.ADMIN)[0], "member": _token(app, Role.MEMBER, home)[0],
            "other": _token(app, Role.MEMBER, other)[0], "auditor": _token(app, Role.AUDITOR)[0],
            "metrics": _token(app, Role.METRICS)[0], "node": _token(app, Role.NODE)[0], "none": None,
            "revoked": revoked, "expired": expired}


def _made(response, status=201) -> None:
    assert response.status_code == status, response.get_data(as_text=True)


@pytest.fixture(scope="module")
def site(app, admin_token, rbd_ioctx, fs, ceph_conf):
    """Three projects (home, with one of everything; other, with a member; empty), an orphan RBD image and
    CephFS directory to adopt, a second registration of the test cluster, and the platform's project (/v1)
    pointed at home."""
    admin = Api(app.test_client(), admin_token)
    home, other, empty = unique("home"), unique("other"), unique("empty")
    for project in (home, other, empty):
        _made(admin.post("/api/v2/projects", json={"name": project, **QUOTA}))
    names = {"home": home, "other": other, "empty": empty, "image": unique("img"), "clone": unique("clone"),
             "trashed_image": unique("gone"), "path": unique("dir"), "trashed_path": unique("gone"),
             "snap": "snap", "fs_snap": "snap", "orphan_image": unique("orphan"), "orphan_path": unique("orphan"),
             "alias": unique("alias"), "ceph_conf": ceph_conf, "new": unique("new"), "missing": unique("missing")}
    for key in ("image", "trashed_image"):
        made = admin.post(f"/api/v2/projects/{home}/rbd-images", json={"name": names[key], "size_bytes": 8 * MiB})
        _made(made)
        names[f"{key}_id"] = made.json["id"]  # the trashed one's: what a purge from the trash names it by
    _made(admin.post(f"/api/v2/projects/{home}/rbd-images/{names['image']}/snapshots", json={"name": "snap"}))
    _made(admin.post(f"/api/v2/projects/{home}/rbd-images", json={
        "name": names["clone"], "source": {"image": names["image"], "snapshot": "snap"}}))
    for key in ("path", "trashed_path"):
        made = admin.post(f"/api/v2/projects/{home}/cephfs-paths", json={"name": names[key], "quota_bytes": 8 * MiB})
        _made(made)
        names[f"{key}_id"] = made.json["id"]  # the trashed one's: what a purge from the trash names it by
    _made(admin.post(f"/api/v2/projects/{home}/cephfs-paths/{names['path']}/snapshots", json={"name": "snap"}))
    _made(admin.delete(f"/api/v2/projects/{home}/rbd-images/{names['trashed_image']}"), 204)
    _made(admin.delete(f"/api/v2/projects/{home}/cephfs-paths/{names['trashed_path']}"), 204)
    _made(admin.post(f"/api/v2/projects/{home}/migrations", json=_filled(RECORD, names)))
    _made(admin.post("/api/v2/clusters", json={"name": names["alias"], "conf_path": ceph_conf}))
    rbd.RBD().create(rbd_ioctx, names["orphan_image"], MiB)
    root = app.config["ROBIN_SETTINGS"].cephfs_root
    fs.mkdirs(f"{root}/{home}/{names['orphan_path']}".encode(), 0o755)
    names["token"] = str(_token(app, Role.MEMBER, home)[1])
    names["missing_token"] = str(2**31 - 1)
    platform = dataclasses.replace(app.config["ROBIN_SETTINGS"], wayne_project=home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(app.config, "ROBIN_SETTINGS", platform)
        yield Site(names, _tokens(app, home, other))
    _made(admin.delete(f"/api/v2/clusters/{names['alias']}"), 204)
    rbd.RBD().remove(rbd_ioctx, names["orphan_image"])
    fs.rmdir(f"{root}/{home}/{names['orphan_path']}".encode())


def _filled(value, names: dict):
    """The call's path, query or body with the site's names in its {placeholders}."""
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {key: _filled(item, names) for key, item in value.items()}
    return value


# --- what a refusal must leave as it was -------------------------------------------------------------

def database_state() -> dict:
    """Every table but the audit trail (a refusal adds its row there): all its rows, in a stable order."""
    state = {}
    with db.reading() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == "audit_events":
                continue
            rows = session.execute(select(table).order_by(*table.primary_key.columns)).all()
            state[table.name] = [tuple(row) for row in rows]
    return state


def audit_rows() -> int:
    from robin.audit.models import AuditEvent

    with db.reading() as session:
        return session.scalar(select(func.max(AuditEvent.id))) or 0


def ceph_state(site: Site, ioctx, fs, root: str) -> dict:
    """The pool's images and trash, robin's ownership records, each home image's size, snapshots and parent; the
    three projects' CephFS directories with their quota, owner and snapshots, and CephFS's trash."""
    state = {"images": sorted(rbd.RBD().list(ioctx)),
             "trash": sorted((entry["id"], entry["name"]) for entry in rbd.RBD().trash_list(ioctx)),
             "owners": _omap(ioctx, DIRECTORY_OBJECT)}
    for name in (site.names["image"], site.names["clone"], site.names["orphan_image"]):
        with rbd.Image(ioctx, name, read_only=True) as image:
            state[name] = (image.size(), sorted(snap["name"] for snap in image.list_snaps()),
                           _parent(image), image.flags())
    for directory in (*(f"{root}/{site.names[key]}" for key in ("home", "other", "empty")), f"{root}/.trash"):
        state[directory] = {child: _directory(fs, f"{directory}/{child}") for child in _listing(fs, directory)}
    return state


def _omap(ioctx, name: str) -> dict:
    with rados.ReadOpCtx() as op:
        values, _ = ioctx.get_omap_vals(op, "", "", 100000)
        try:
            ioctx.operate_read_op(op, name)
        except rados.ObjectNotFound:
            return {}
        return dict(values)


def _parent(image):
    try:
        return image.parent_info()
    except rbd.ImageNotFound:
        return None


def _listing(fs, directory: str) -> list[str]:
    import cephfs

    try:
        handle = fs.opendir(directory.encode())
    except cephfs.ObjectNotFound:
        return []
    names = []
    try:
        while entry := fs.readdir(handle):
            if entry.d_name not in (b".", b".."):
                names.append(entry.d_name.decode())
    finally:
        fs.closedir(handle)
    return sorted(names)


def _directory(fs, path: str) -> tuple:
    return (_xattr(fs, path, "ceph.quota.max_bytes"), _xattr(fs, path, OWNER_XATTR), _listing(fs, f"{path}/.snap"),
            _listing(fs, path))


def _xattr(fs, path: str, name: str):
    import cephfs

    try:
        return fs.getxattr(path.encode(), name)
    except (cephfs.NoData, cephfs.ObjectNotFound, cephfs.OSError):
        return None


# --- the matrix ------------------------------------------------------------------------------------

def _send(app, site: Site, role: str, call: Call):
    token = site.tokens[role]
    path, query = _filled(call.path, site.names), _filled(call.query, site.names)
    if path.startswith("/v1/"):  # as Wayne sends it: a `token` header, a JSON body without a Content-Type
        headers = {"token": token} if token else {}
        data = json.dumps(_filled(call.body, site.names)) if call.body is not None else None
        return app.test_client().open(path, method=call.method, headers=headers, data=data, query_string=query)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().open(path, method=call.method, headers=headers, query_string=query,
                                  json=_filled(call.body, site.names) if call.body is not None else None)


def error_code(response) -> str:
    if response.mimetype == "text/plain":  # /v1: `<code>: <message>`
        return response.get_data(as_text=True).partition(": ")[0]
    return response.json["error"]["code"]


def _home_names(site: Site) -> tuple[str, ...]:
    return tuple(site.names[key] for key in ("home", "image", "clone", "path", "trashed_image", "trashed_path"))


@pytest.mark.parametrize("key, index", CALLS, ids=[f"{method} {rule} #{index}" for (rule, method), index in CALLS])
def test_each_role_gets_what_the_table_says(app, site, rbd_ioctx, fs, key, index):
    call = ROUTES[key][index].call
    expected = ROUTES[key][index]
    root = app.config["ROBIN_SETTINGS"].cephfs_root
    ceph_before, database_before = ceph_state(site, rbd_ioctx, fs, root), database_state()
    for role in ROLES:
        outcome = expected.outcome(role)
        if outcome in ("allowed", "filtered"):
            continue
        audited_before = audit_rows()
        response = _send(app, site, role, call)
        status, code = outcome
        assert (response.status_code, error_code(response)) == (status, code), (role, response.get_data(True))
        # A GET that starts work is audited once it reaches its view: after authentication.
        if call.method != "GET" or (key in STARTS_WORK and role not in ANONYMOUS):
            _assert_refusal_audited(audited_before, status, code, role)
    _probe_allowed_writes(app, site, key, expected)
    assert database_state() == database_before, "a refused call changed the database"
    assert ceph_state(site, rbd_ioctx, fs, root) == ceph_before, "a refused call changed Ceph"
    if call.method == "GET" and key not in STARTS_WORK:
        _check_reads(app, site, expected)


def _probe_allowed_writes(app, site: Site, key, expected: Entry) -> None:
    """Each role allowed to write makes the entry's probe, which passes authorization and changes nothing."""
    if expected.probe is None:
        assert expected.call.method == "GET" or not expected.allowed or key in UNPROBED, "a write without a probe"
        return
    call, (status, code) = expected.probe
    for role in sorted(expected.allowed):
        audited_before = audit_rows()
        response = _send(app, site, role, call)
        assert (response.status_code, error_code(response)) == (status, code), (role, response.get_data(True))
        _assert_refusal_audited(audited_before, status, code, role)


def _assert_refusal_audited(before: int, status: int, code: str, role: str) -> None:
    from robin.audit.models import AuditEvent

    with db.reading() as session:
        rows = session.execute(select(AuditEvent.status_code, AuditEvent.error_code, AuditEvent.outcome)
                               .where(AuditEvent.id > before)).all()
    assert [tuple(row)[:2] for row in rows] == [(status, code)], (role, rows)


def _check_reads(app, site: Site, expected: Entry) -> None:
    for role in ROLES:
        outcome = expected.outcome(role)
        if outcome not in ("allowed", "filtered"):
            continue
        response = _send(app, site, role, expected.call)
        assert response.status_code == 200, (role, response.get_data(as_text=True))
        if outcome == "filtered":
            text = response.get_data(as_text=True)
            assert not [name for name in _home_names(site) if name in text], (role, text)

