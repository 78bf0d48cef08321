"""List-then-watch of one kind of object into a local cache, as client-go's informers do.

The loop lists (in pages), then watches from the list's resourceVersion with bookmarks, a server-side timeout
and a longer client-side one. A watch that ends is resumed from the last resourceVersion seen; a 410 Gone
(the version was compacted) means listing again; any other error backs off exponentially. Every change, and
every object of a re-list, is handed to `on_change(key, old, new)` (`new` is None for a deletion), which
must be quick: the provisioner only queues the key there.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from robin.kube.client import CONNECT_TIMEOUT, Kube, KubeError
from robin.provisioner.backoff import Backoff

log = logging.getLogger(__name__)
LIST_PAGE = 500
# How long after the server's own watch timeout the client gives up on a silent connection.
WATCH_GRACE = 30


class Expired(Exception):
    """The resourceVersion to list or watch from is gone (410): list again."""


def object_key(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


class Informer:
    def __init__(self, kind: str, api_version: str, list_method, kube: Kube,
                 on_change: Callable[[str, dict | None, dict | None], None], stop: threading.Event, watch_timeout: int,
                 on_restart: Callable[[str, str], None] | None = None):
        self.kind, self.api_version = kind, api_version
        self._list_method = list_method
        self._kube = kube
        self._on_change = on_change
        self._stop = stop
        self._watch_timeout = watch_timeout
        self._on_restart = on_restart or (lambda kind, reason: None)
        self._cache: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._response = None
        self.resource_version: str | None = None
        self.synced = threading.Event()  # set once the first list is in the cache

    # --- the cache ----------------------------------------------------------------------------------------

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._cache.get(key)

    def items(self) -> list[dict]:
        with self._lock:
            return list(self._cache.values())

    # --- the loop -----------------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                self._watch()
                backoff.reset()
            except Expired:
                log.info("%s: resourceVersion %s expired, listing again", self.kind, self.resource_version)
                self.resource_version = None
                self._on_restart(self.kind, "expired")
            except KubeError as exc:
                if self._stop.is_set():
                    return
                delay = max(backoff.next(), exc.retry_after or 0)
                log.warning("%s: list/watch failed (%s); again in %.1f s", self.kind, exc, delay)
                self._on_restart(self.kind, "error")
                self._stop.wait(delay)

    def stop(self) -> None:
        """Interrupts a blocked watch (the caller has set the stop event)."""
        response = self._response
        if response is not None:
            # The watch may be ending by itself at this moment: urllib3 then refuses (ValueError, RuntimeError).
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                response.shutdown()

    def _relist(self) -> None:
        fresh, continue_token = {}, None
        while True:
            try:
                page = self._kube.call(self._list_method, limit=LIST_PAGE, _continue=continue_token)
            except KubeError as exc:
                if exc.status == 410:
                    fresh, continue_token = {}, None  # the list's snapshot expired between pages
                    continue
                raise
            for obj in page.get("items") or []:
                # List items come without kind and apiVersion (watch events have them); Events need them.
                obj.setdefault("kind", self.kind)
                obj.setdefault("apiVersion", self.api_version)
                fresh[object_key(obj)] = obj
            continue_token = page["metadata"].get("continue")
            if not continue_token:
                break
        with self._lock:
            old, self._cache = self._cache, fresh
        self.resource_version = page["metadata"]["resourceVersion"]
        for key, obj in old.items():
            if key not in fresh:
                self._on_change(key, obj, None)
        for key, obj in fresh.items():
            self._on_change(key, old.get(key), obj)
        self.synced.set()

    def _watch(self) -> None:
        try:
            response = self._list_method(watch=True, resource_version=self.resource_version,
                                         allow_watch_bookmarks=True, timeout_seconds=self._watch_timeout,
                                         _preload_content=False,
                                         _request_timeout=(CONNECT_TIMEOUT, self._watch_timeout + WATCH_GRACE))
        except ApiException as exc:
            raise (Expired() if exc.status == 410 else KubeError.from_api_exception(exc)) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, "Unreachable", f"watch of {self.kind} failed: {exc}") from exc
        self._response = response
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    return
                if line:
                    self._apply(json.loads(line))
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # a connection cut mid-stream
            if not self._stop.is_set():
                raise KubeError(0, "WatchInterrupted", f"watch of {self.kind} broke off: {exc}") from exc
        finally:
            self._response = None
            response.release_conn()

    def _apply(self, event: dict) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise KubeError(obj.get("code") or 0, obj.get("reason") or "Error", obj.get("message") or "watch error")
        if kind == "BOOKMARK":
            self.resource_version = obj["metadata"]["resourceVersion"]
            return
        key = object_key(obj)
        with self._lock:
            old = self._cache.get(key)
            if kind == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
        self.resource_version = obj["metadata"]["resourceVersion"]
        self._on_change(key, old, None if kind == "DELETED" else obj)
