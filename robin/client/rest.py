"""A small client of robin's REST API, for the programs that drive robin from outside (the Kubernetes
provisioner, the CSI shim). It speaks `/api/v2` only, keeps one pooled HTTP session, and turns every error
answer into `RobinApiError` carrying robin's stable `code`, so callers decide by code, never by message."""
from __future__ import annotations

import http.client
import json as jsonlib
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from robin.client.connections import DirectConnections
from robin.config import ClientSettings

MiB = 2**20


def round_up_to_mib(size: int) -> int:
    """Volumes made for Kubernetes are whole MiB, as the node tools (mkfs, losetup) want; integer arithmetic, so
    exact at any size."""
    return -(-size // MiB) * MiB


# A volume kind's collection and the name of its size field on the wire.
COLLECTIONS = {"rbd": ("rbd-images", "size_bytes"), "cephfs": ("cephfs-paths", "quota_bytes")}


class RobinApiError(Exception):
    """robin answered with an error (`status` >= 400, `code` from its error body), or could not be reached
    (`status` 0, code `unreachable`)."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    @property
    def retryable(self) -> bool:
        """Worth trying again unchanged: robin or Ceph was unavailable, or the volume was busy."""
        return self.status == 0 or self.status >= 500 or self.code in ("volume_busy", "ceph_busy")

    @property
    def explanation(self) -> str:
        """The message, with the fields a validation error names (robin puts them in details.fields) that it does
        not name already (robin's messages for invalid input do, as `field: problem` or `field.nested: problem`)."""
        fields = self.details.get("fields")
        if not isinstance(fields, dict):
            return self.message
        unnamed = {name: problems for name, problems in fields.items()
                   if f"{name}:" not in self.message and f"{name}." not in self.message}
        if not unnamed:
            return self.message
        return f"{self.message}: " + "; ".join(f"{name}: {_flatten(problems)}" for name, problems in unnamed.items())

    def __str__(self) -> str:
        return f"{self.explanation} ({self.code})" if self.status else self.message


def _flatten(problems) -> str:
    if isinstance(problems, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in problems.items())
    if isinstance(problems, list):
        return " ".join(_flatten(p) for p in problems)
    return str(problems)


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str
    connect_timeout: float = 5.0
    # Longer than robin's own Ceph timeout, so robin's 503 arrives before we give up on it.
    read_timeout: float = 60.0
    pool_size: int = 16

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None, token_file: str | None = None,
                 **kwargs) -> ClientConfig:
        """ROBIN_URL and ROBIN_TOKEN (or ROBIN_TOKEN_FILE, e.g. a mounted Kubernetes secret), from the environment
        or the config file; ConfigError (a ValueError) when they are missing."""
        settings = ClientSettings.from_env(url=url, token=token, token_file=token_file)
        return cls(url=settings.url.rstrip("/"), token=settings.api_token(), **kwargs)


class RobinClient:
    """Thread-safe (one requests.Session, whose connection pool is sized for the callers' threads).

    robin at a plain http:// URL that no proxy of the environment stands in front of (the chart's in-cluster
    Service) is asked on kept-alive http.client connections directly (DirectConnections), without requests' work
    around each request (cookies, hooks, the environment's proxies and netrc looked up anew) nor urllib3's (its
    retry, timeout and header objects, its response wrapper): about half the client CPU of urllib3's pool
    (benchmarks/robin_client_cpu.py); anything else (https with its CA bundle, a proxy) goes through the session."""

    def __init__(self, config: ClientConfig):
        self.config = config
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=config.pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"Authorization": f"Bearer {config.token}", "User-Agent": "robin-client"})
        self._pool, self._prefix = _direct_pool(config)
        # What the session would send, but no Accept-Encoding: http.client then asks for identity, which it reads.
        self._direct_headers = {name: value for name, value in self._session.headers.items()
                                if name.lower() != "accept-encoding"}

    def close(self) -> None:
        self._session.close()
        if self._pool is not None:
            self._pool.close()

    def request(self, method: str, path: str, json: dict | None = None, params: dict | None = None):
        """The decoded JSON answer (None for 204); RobinApiError otherwise."""
        try:
            if self._pool is not None:
                status, data = self._send_direct(method, path, json, params)
            else:
                response = self._session.request(method, self.config.url + path, json=json, params=params,
                                                 timeout=(self.config.connect_timeout, self.config.read_timeout))
                status, data = response.status_code, response.content
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise RobinApiError(0, "unreachable", f"robin's API at {self.config.url} did not answer: {exc}") from exc
        if status == 204:
            return None
        try:
            body = jsonlib.loads(data)
        except ValueError:
            body = None
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict):
                error = {"code": "http_error", "message": f"{method} {path}: HTTP {status}"}
            raise RobinApiError(status, error.get("code", "http_error"), error.get("message", ""),
                                error.get("details"))
        return body

    def _send_direct(self, method: str, path: str, json: dict | None, params: dict | None) -> tuple[int, bytes]:
        """The request as the session sends it (its headers, JSON without NaN, no retry of a request that may have
        reached robin) on a kept-alive connection: (status, body). No redirect is followed: robin's API answers,
        never redirects."""
        headers, body = self._direct_headers, None
        if json is not None:
            body = jsonlib.dumps(json, allow_nan=False).encode()
            headers = {**headers, "Content-Type": "application/json"}
        target = self._prefix + path + ("?" + urlencode(params, doseq=True) if params else "")
        response, data = self._pool.send(method, target, body, headers)
        return response.status, data

    # --- projects ---------------------------------------------------------------------------------------

    def get_project(self, project: str) -> dict:
        return self.request("GET", f"/api/v2/projects/{quote(project, safe='')}")

    def create_project(self, project: str, quota: dict) -> dict:
        return self.request("POST", "/api/v2/projects", json={"name": project, "quota": quota})

    def list_projects(self, limit: int = 1000, cursor: str | None = None) -> dict:
        """One page: `items` and `next_cursor` (None on the last page)."""
        return self.request("GET", "/api/v2/projects", params=_page_params(limit, cursor))

    def project_usage(self, project: str) -> dict:
        return self.request("GET", f"/api/v2/projects/{quote(project, safe='')}/usage")

    def update_project_quota(self, project: str, quota: dict) -> dict:
        """Change the quota's fields given (max_bytes, max_volumes, max_snapshots); the others stay."""
        return self.request("PATCH", f"/api/v2/projects/{quote(project, safe='')}", json={"quota": quota})

    def delete_project(self, project: str) -> None:
        self.request("DELETE", f"/api/v2/projects/{quote(project, safe='')}")

    # --- volumes ----------------------------------------------------------------------------------------

    @staticmethod
    def _volume_path(kind: str, project: str, name: str | None = None) -> str:
        path = f"/api/v2/projects/{quote(project, safe='')}/{COLLECTIONS[kind][0]}"
        return path if name is None else f"{path}/{quote(name, safe='')}"

    def create_volume(self, kind: str, project: str, name: str, size_bytes: int, **fields) -> dict:
        """An RBD image (`fields`: pool, cluster, features, metadata, source) or a CephFS path (fs, cluster)."""
        body = {"name": name, COLLECTIONS[kind][1]: size_bytes, **fields}
        return self.request("POST", self._volume_path(kind, project), json=body)

    def clone_image(self, project: str, name: str, source: dict, **fields) -> dict:
        """A copy-on-write clone of `source` (image, and snapshot or its current state); `fields`: size_bytes
        (the source's when not given), pool, cluster, features, metadata."""
        return self.request("POST", self._volume_path("rbd", project), json={"name": name, "source": source,
                                                                             **fields})

    def get_volume(self, kind: str, project: str, name: str, with_used: bool = False) -> dict:
        """The volume; with `with_used`, the bytes it occupies are measured in Ceph (used_bytes)."""
        params = {"with_used": "true"} if with_used else None
        return self.request("GET", self._volume_path(kind, project, name), params=params)

    def resize_volume(self, kind: str, project: str, name: str, size_bytes: int, allow_shrink: bool = False) -> dict:
        body = {COLLECTIONS[kind][1]: size_bytes} | ({"allow_shrink": True} if allow_shrink else {})
        return self.request("PATCH", self._volume_path(kind, project, name), json=body)

    def delete_volume(self, kind: str, project: str, name: str, with_snapshots: bool = False,
                      purge: bool = False) -> None:
        params = {"with_snapshots": str(with_snapshots).lower(), "purge": str(purge).lower()}
        self.request("DELETE", self._volume_path(kind, project, name), params=params)

    def authorize_cephfs_path(self, project: str, name: str) -> dict:
        """The path's own cephx user for a host that mounts it (admin and node tokens): user_id, key, cluster, fs,
        path. The answer holds a key: never log it."""
        return self.request("POST", self._volume_path("cephfs", project, name) + "/authorize")

    def list_volumes(self, kind: str, project: str, limit: int = 1000, cursor: str | None = None,
                     trashed: bool = False) -> dict:
        """One page of a project's live volumes of `kind` (those in the trash instead with `trashed`)."""
        params = _page_params(limit, cursor) | ({"trashed": "true"} if trashed else {})
        return self.request("GET", self._volume_path(kind, project), params=params)

    def list_all_volumes(self, limit: int = 1000, cursor: str | None = None, project: str | None = None) -> dict:
        """One page of the live volumes of both kinds the token sees (or of one project's), each naming its
        `kind` and `project`."""
        params = _page_params(limit, cursor) | ({"project": project} if project else {})
        return self.request("GET", "/api/v2/volumes", params=params)

    def restore_volume(self, kind: str, project: str, name: str) -> dict:
        """Bring a volume back from the trash."""
        return self.request("POST", f"{self._volume_path(kind, project, name)}/restore")

    def purge_trashed_volume(self, kind: str, project: str, name: str, volume_id: str) -> None:
        """Purge the volume `volume_id` (of that name) from the trash now, before its purge time (admins)."""
        self.request("POST", f"{self._volume_path(kind, project, name)}/purge", params={"id": volume_id})

    def flatten_image(self, project: str, name: str) -> dict:
        """Copy a clone's parent's blocks into it: it stands alone."""
        return self.request("POST", f"{self._volume_path('rbd', project, name)}/flatten")

    # --- snapshots --------------------------------------------------------------------------------------

    @staticmethod
    def _snapshot_path(kind: str, project: str, volume: str, name: str | None = None) -> str:
        path = f"{RobinClient._volume_path(kind, project, volume)}/snapshots"
        return path if name is None else f"{path}/{quote(name, safe='')}"

    def create_snapshot(self, kind: str, project: str, volume: str, name: str) -> dict:
        return self.request("POST", self._snapshot_path(kind, project, volume), json={"name": name})

    def get_snapshot(self, kind: str, project: str, volume: str, name: str) -> dict:
        return self.request("GET", self._snapshot_path(kind, project, volume, name))

    def delete_snapshot(self, kind: str, project: str, volume: str, name: str) -> None:
        self.request("DELETE", self._snapshot_path(kind, project, volume, name))

    def rollback_snapshot(self, kind: str, project: str, volume: str, name: str) -> dict:
        """Put the volume back to the snapshot's content."""
        return self.request("POST", f"{self._snapshot_path(kind, project, volume, name)}/rollback")

    def list_snapshots(self, kind: str, project: str, volume: str, limit: int = 1000,
                       cursor: str | None = None) -> dict:
        """One page of a volume's snapshots."""
        return self.request("GET", self._snapshot_path(kind, project, volume), params=_page_params(limit, cursor))

    def list_all_snapshots(self, project: str | None = None, names: tuple[str, ...] = (), state: str | None = None,
                           limit: int = 1000, cursor: str | None = None) -> dict:
        """One page of the snapshots of every volume the token sees (or of one project's), each naming its
        `project`, `volume_kind` and `volume`; only those of `names` (up to 10) and `state` when given."""
        params = {**_page_params(limit, cursor), "name": list(names)}
        params |= {key: value for key, value in (("project", project), ("state", state)) if value is not None}
        return self.request("GET", "/api/v2/snapshots", params=params)

    # --- migrations -------------------------------------------------------------------------------------

    def record_migration(self, project: str, source: str, kind: str, name: str, status: str,
                         report: dict | None = None, **fields) -> dict:
        """fields: run, replaces (see the migration record's schema)."""
        body = {"source": source, "volume_kind": kind, "volume_name": name, "status": status, "report": report or {},
                **fields}
        return self.request("POST", f"/api/v2/projects/{quote(project, safe='')}/migrations", json=body)

    def migration_records(self, project: str, kind: str, name: str) -> list[dict]:
        """Every record of one destination volume, oldest first."""
        records, cursor = [], None
        while True:
            params = {**_page_params(1000, cursor), "volume_kind": kind, "volume_name": name}
            page = self.request("GET", f"/api/v2/projects/{quote(project, safe='')}/migrations", params=params)
            records += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return records

    # --- clusters ---------------------------------------------------------------------------------------

    def get_cluster(self, name: str) -> dict:
        return self.request("GET", f"/api/v2/clusters/{quote(name, safe='')}")

    def list_clusters(self) -> list[dict]:
        return self.request("GET", "/api/v2/clusters")

    def register_cluster(self, body: dict) -> dict:
        """body: name, and conf_path (with keyring_path), or mon_host and key (see the cluster's schema)."""
        return self.request("POST", "/api/v2/clusters", json=body)

    def unregister_cluster(self, name: str) -> None:
        self.request("DELETE", f"/api/v2/clusters/{quote(name, safe='')}")


def _direct_pool(config: ClientConfig) -> tuple[DirectConnections | None, str]:
    """(the connections, the URL's path) for robin at a plain http:// URL without a proxy, else (None, "")."""
    url = urlsplit(config.url)
    if url.scheme != "http" or requests.utils.get_environ_proxies(config.url):
        return None, ""
    return DirectConnections(url.hostname, url.port or 80, config.pool_size, config.connect_timeout,
                             config.read_timeout), url.path


def _page_params(limit: int, cursor: str | None) -> dict:
    return {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}


def volume_size(kind: str, volume: dict) -> int:
    """A volume's size in bytes, whatever its kind calls it."""
    return volume[COLLECTIONS[kind][1]]


@dataclass(frozen=True)
class VolumeRef:
    """A volume as robin's API addresses it, and its one-line form (a CSI volume id / PV annotation):
    `<kind>:<project>:<name>`; neither part can contain ':' (projects are DNS labels, names [A-Za-z0-9._-])."""

    kind: str
    project: str
    name: str

    @property
    def handle(self) -> str:
        return f"{self.kind}:{self.project}:{self.name}"

    @classmethod
    def parse(cls, handle: str) -> VolumeRef:
        parts = handle.split(":")
        if len(parts) != 3 or parts[0] not in COLLECTIONS or not all(parts):
            raise ValueError(f"{handle!r} is not a robin volume handle (<rbd|cephfs>:<project>:<name>)")
        return cls(*parts)
