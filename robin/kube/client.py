"""Kubernetes API access for the provisioner and the migration through the official client, on plain dicts.

The generated models are skipped (`_preload_content=False`, then json): robin reads a handful of
fields, and building model objects for thousands of claims would cost more than the requests. The writes the
provisioner makes for every claim (and its Events) skip the generated methods' argument validation and
serialisation, which cost more CPU than the request itself: `send` makes the request a generated method would (its
verb and path, read once from the method's own request builder) on the client's connection pool, with the same
authentication. Every request but watches goes through a token bucket
(client-go's QPS and burst), and every request has a client timeout.
"""
from __future__ import annotations

import inspect
import json
import threading
import time
from urllib.parse import quote

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
# How long `send` reuses the Authorization header: the configuration's refresh hook (a token file re-read, an exec
# plugin's expiry) costs more CPU than a request, and client-go too reuses a token for a while.
AUTH_REUSE_S = 1.0
STRATEGIC = "application/strategic-merge-patch+json"
PATH_PARAMETERS = ("name", "namespace")
PLACEHOLDER = "robin0{}0placeholder"  # survives the path's quoting as it is
MERGE = "application/merge-patch+json"


class KubeError(Exception):
    """A Kubernetes API request failed: `status` (0 when no answer came), `reason` from the Status object."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.retry_after = status, reason, message, retry_after

    @classmethod
    def from_api_exception(cls, exc: ApiException) -> KubeError:
        reason, message = exc.reason or "Unknown", str(exc.reason or exc)
        try:
            status = json.loads(exc.body or b"")
        except (TypeError, ValueError):
            status = None
        if isinstance(status, dict):  # a Status object; a proxy in the way may answer anything
            reason, message = status.get("reason") or reason, status.get("message") or message
        retry_after = (exc.headers or {}).get("Retry-After")
        return cls(exc.status or 0, reason, message, float(retry_after) if retry_after else None)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; acquire() waits for one."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._tokens, self._last = float(burst), time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            time.sleep(wait)


def load_api_client(kubeconfig: str, pool_size: int) -> client.ApiClient:
    """From `kubeconfig` when given; else the in-cluster service account; else $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class Kube:
    """The calls the provisioner and the migration make, on dicts. Thread-safe."""

    def __init__(self, api_client: client.ApiClient, qps: float, burst: int):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.version = client.VersionApi(api_client)
        self._limiter = TokenBucket(qps, burst)
        self._auth_lock = threading.Lock()
        self._auth: tuple[float, dict] = (float("-inf"), {})  # (when asked, the headers the configuration gave)
        self._request_lines: dict[tuple[str, str], tuple[str, str]] = {}
        self._pool: tuple[urllib3.HTTPConnectionPool, str] | None = None  # see _host_pool

    def close(self) -> None:
        self.api_client.close()

    def call(self, method, *args, **kwargs):
        """`method` of one of the API objects, rate limited, with a timeout; the decoded answer."""
        self._limiter.acquire()
        kwargs.setdefault("_request_timeout", (CONNECT_TIMEOUT, REQUEST_TIMEOUT))
        try:
            response = method(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            raise KubeError.from_api_exception(exc) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, "Unreachable", f"the Kubernetes API did not answer: {exc}") from exc
        return json.loads(response.data) if response.data else None

    def send(self, method, body: dict | None = None, content_type: str = "application/json", **path: str):
        """The request `method` (a generated method of one of the API objects) makes, with `body` as JSON and `path`'s
        values (name, namespace) in its path, rate limited, with a timeout; the decoded answer. The token is the
        configuration's, refreshed by its hook (see _auth_headers)."""
        verb, template = self._request_line(method)
        self._limiter.acquire()
        headers = {**self.api_client.default_headers, "Accept": "application/json", "Content-Type": content_type,
                   **self._auth_headers()}
        target = template.format(**{k: quote(v, safe="") for k, v in path.items()})
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=REQUEST_TIMEOUT)
        try:
            host_pool = self._host_pool()
            if host_pool is None:
                response = self.api_client.rest_client.pool_manager.request(
                    verb, self.api_client.configuration.host + target, body=data, headers=headers, timeout=timeout)
            else:
                pool, prefix = host_pool
                # As the pool manager sends it (same pool, request URI, no redirect followed: the API server
                # answers these writes, it never redirects them).
                response = pool.urlopen(verb, prefix + target, body=data, headers=headers, timeout=timeout,
                                        assert_same_host=False, redirect=False)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, "Unreachable", f"the Kubernetes API did not answer: {exc}") from exc
        if not 200 <= response.status <= 299:
            exc = ApiException(status=response.status, reason=response.reason)
            exc.body, exc.headers = response.data, response.headers
            raise KubeError.from_api_exception(exc)
        return json.loads(response.data) if response.data else None

    def _host_pool(self) -> tuple[urllib3.HTTPConnectionPool, str] | None:
        """The API server's connection pool (the one the pool manager picks for its host, with the same TLS
        settings) and the path of the configured host (a proxy in front of the API server may serve it under one),
        looked up once: the pool manager's own lookup of it costs a fifth of a request's client CPU. None behind an
        HTTP proxy, whose manager rewrites every request: it then sends them itself."""
        manager = self.api_client.rest_client.pool_manager
        if isinstance(manager, urllib3.ProxyManager):
            return None
        cached = self._pool
        if cached is None or cached[0].pool is None:  # not looked up yet, or closed with the manager
            host = self.api_client.configuration.host
            cached = self._pool = (manager.connection_from_url(host), urllib3.util.parse_url(host).path or "")
        return cached

    def _request_line(self, method) -> tuple[str, str]:
        """(HTTP verb, path with {name} and {namespace} left to fill) of a generated method: what its request
        builder makes of placeholder arguments, asked once per method."""
        key = (type(method.__self__).__name__, method.__name__)
        line = self._request_lines.get(key)
        if line is None:
            serialize = getattr(method.__self__, f"_{method.__name__}_serialize")
            arguments = dict.fromkeys(inspect.signature(serialize).parameters)
            arguments.update({name: PLACEHOLDER.format(name) for name in PATH_PARAMETERS if name in arguments},
                             _host_index=0)
            verb, url, *_ = serialize(**arguments)
            template = url.removeprefix(self.api_client.configuration.host)
            for name in PATH_PARAMETERS:
                template = template.replace(PLACEHOLDER.format(name), "{" + name + "}")
            line = self._request_lines[key] = (verb, template)
        return line

    def _auth_headers(self) -> dict:
        """The Authorization header as the generated methods would send it, asked of the configuration (and its
        refresh hook) at most every AUTH_REUSE_S."""
        with self._auth_lock:
            asked, headers = self._auth
            if time.monotonic() - asked >= AUTH_REUSE_S:
                headers = {}
                self.api_client.update_params_for_auth(headers, [], ["BearerToken"], "", "", None)
                self._auth = (time.monotonic(), headers)
            return headers

    def server_version(self) -> tuple[int, int]:
        """(major, minor) of the API server (`/version`; a provider's "31+" counts as 31)."""
        info = self.call(self.version.get_code)
        try:
            return int(info["major"].rstrip("+")), int(info["minor"].rstrip("+"))
        except (KeyError, TypeError, ValueError):
            raise KubeError(0, "BadVersion", f"the API server's /version is not a version: {info}") from None

    # --- the objects --------------------------------------------------------------------------------------

    def patch_claim(self, namespace: str, name: str, patch: dict, content_type: str = STRATEGIC) -> dict:
        return self.send(self.core.patch_namespaced_persistent_volume_claim, patch, content_type, name=name,
                         namespace=namespace)

    def patch_claim_status(self, namespace: str, name: str, patch: dict) -> dict:
        return self.send(self.core.patch_namespaced_persistent_volume_claim_status, patch, MERGE, name=name,
                         namespace=namespace)

    def create_volume(self, body: dict) -> dict:
        return self.send(self.core.create_persistent_volume, body)

    def get_volume(self, name: str) -> dict:
        return self.send(self.core.read_persistent_volume, name=name)

    def patch_volume(self, name: str, patch: dict, content_type: str = STRATEGIC) -> dict:
        return self.send(self.core.patch_persistent_volume, patch, content_type, name=name)

    def delete_volume(self, name: str, uid: str | None = None) -> None:
        """With `uid`, a precondition: the PV of that uid only (409 when the name now stands for another object)."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}} if uid else None
        self.send(self.core.delete_persistent_volume, body, name=name)

    def create_event(self, namespace: str, body: dict) -> dict:
        return self.send(self.core.create_namespaced_event, body, namespace=namespace)

    def patch_event(self, namespace: str, name: str, patch: dict) -> dict:
        return self.send(self.core.patch_namespaced_event, patch, MERGE, name=name, namespace=namespace)
