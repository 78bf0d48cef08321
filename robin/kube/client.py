"""Kubernetes API access for the provisioner and the migration through the official client, on plain dicts.

The generated models are skipped (`_preload_content=False`, then json): robin reads a handful of
fields, and building model objects for thousands of claims would cost more than the requests. The writes the
provisioner makes for every claim (and its Events) skip the generated methods' argument validation and
serialisation, which cost more CPU than the request itself: `send` makes the request a generated method would (its
verb and path, read once from the method's own request builder) with the same authentication, on kept-alive
http.client connections of its own (robin.client.connections: half the client CPU of urllib3's pool) that verify
the API server as the kubernetes client has urllib3 verify it. Every request but watches goes through a token
bucket (client-go's QPS and burst), and every request has a client timeout.
"""
from __future__ import annotations

import http.client
import inspect
import json
import ssl
import threading
import time
from urllib.parse import quote, urlsplit

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from robin.client.connections import DirectConnections

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


def direct_connections(api_client: client.ApiClient) -> tuple[DirectConnections, str] | None:
    """Kube.send's own connections to the API server, and the path of the configured host (a proxy in front of
    the API server may serve it under one); None where the kubernetes client's urllib3 does more than connect and
    verify (an HTTP or SOCKS proxy, a pinned hostname or TLS server name, socket options, retries): `send` then
    leaves the request to its pool manager."""
    configuration = api_client.configuration
    if (type(api_client.rest_client.pool_manager) is not urllib3.PoolManager
            or configuration.assert_hostname is not None or configuration.tls_server_name
            or configuration.socket_options is not None or getattr(configuration, "keep_alive", False)
            or configuration.retries is not None):
        return None
    url = urlsplit(configuration.host)  # its hostname without an IPv6 address's brackets, as sockets want it
    https = url.scheme == "https"
    connections = DirectConnections(url.hostname, url.port or (443 if https else 80),
                                    configuration.connection_pool_maxsize or 1, CONNECT_TIMEOUT, REQUEST_TIMEOUT,
                                    tls=(lambda: tls_context(configuration)) if https else None)
    return connections, url.path or ""


def tls_context(configuration: client.Configuration) -> ssl.SSLContext:
    """What the kubernetes client has urllib3 check: the server's certificate against `ssl_ca_cert` /
    `ca_cert_data` (else the system's CAs) and its hostname, unless `verify_ssl` is off (kubeconfig's
    insecure-skip-tls-verify); the client's certificate when given. TLS 1.2 at least, as urllib3."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert, cadata=configuration.ca_cert_data)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


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
        self._direct = direct_connections(api_client)  # (connections, the host's path), or None: see there

    def close(self) -> None:
        self.api_client.close()
        if self._direct is not None:
            self._direct[0].close()

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
        try:
            if self._direct is None:
                response = self.api_client.rest_client.pool_manager.request(
                    verb, self.api_client.configuration.host + target, body=data, headers=headers,
                    timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=REQUEST_TIMEOUT))
                answer = response.data
            else:
                # No redirect followed: the API server answers these writes, it never redirects them.
                connections, prefix = self._direct
                response, answer = connections.send(verb, prefix + target, data, headers)
        except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            raise KubeError(0, "Unreachable", f"the Kubernetes API did not answer: {exc}") from exc
        if not 200 <= response.status <= 299:
            exc = ApiException(status=response.status, reason=response.reason)
            exc.body, exc.headers = answer, response.headers
            raise KubeError.from_api_exception(exc)
        return json.loads(answer) if answer else None

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
