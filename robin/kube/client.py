"""Kubernetes API access for the provisioner and the migration through the official client, on plain dicts.

The generated models are skipped (`_preload_content=False`, then json): robin reads a handful of
fields, and building model objects for thousands of claims would cost more than the requests. Every request
but watches goes through a token bucket (client-go's QPS and burst), and every request has a client timeout.
"""
from __future__ import annotations

import json
import threading
import time

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
STRATEGIC = "application/strategic-merge-patch+json"
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
        self._limiter = TokenBucket(qps, burst)

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

    # --- the objects --------------------------------------------------------------------------------------

    def patch_claim(self, namespace: str, name: str, patch: dict, content_type: str = STRATEGIC) -> dict:
        return self.call(self.core.patch_namespaced_persistent_volume_claim, name, namespace, patch,
                         _content_type=content_type)

    def patch_claim_status(self, namespace: str, name: str, patch: dict) -> dict:
        return self.call(self.core.patch_namespaced_persistent_volume_claim_status, name, namespace, patch,
                         _content_type=MERGE)

    def create_volume(self, body: dict) -> dict:
        return self.call(self.core.create_persistent_volume, body)

    def get_volume(self, name: str) -> dict:
        return self.call(self.core.read_persistent_volume, name)

    def patch_volume(self, name: str, patch: dict, content_type: str = STRATEGIC) -> dict:
        return self.call(self.core.patch_persistent_volume, name, patch, _content_type=content_type)

    def delete_volume(self, name: str) -> None:
        self.call(self.core.delete_persistent_volume, name)
