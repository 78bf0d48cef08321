"""Kubernetes Events about claims and volumes, written off the provisioning path.

record() only queues; one thread writes. An event repeating an earlier one (same object, type, reason and
message) bumps that one's count and lastTimestamp instead of adding another, as client-go's correlator does,
so a claim retried for an hour has one event with a count, not hundreds. When the queue is full, events are
dropped (and counted): they are for people, and must never slow provisioning down.
"""
from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import OrderedDict
from datetime import UTC, datetime

from robin.kube.client import Kube, KubeError

log = logging.getLogger(__name__)
QUEUE_SIZE = 10000
REMEMBERED = 4096  # events kept for correlation


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, kube: Kube, component: str, instance: str, on_drop=None):
        self._kube, self._component, self._instance = kube, component, instance
        self._queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self._seen: OrderedDict[tuple, tuple[str, str, int]] = OrderedDict()  # key -> (namespace, name, count)
        self._on_drop = on_drop or (lambda: None)

    def normal(self, obj: dict, reason: str, message: str) -> None:
        self._record(obj, "Normal", reason, message)

    def warning(self, obj: dict, reason: str, message: str) -> None:
        self._record(obj, "Warning", reason, message)

    def _record(self, obj: dict, event_type: str, reason: str, message: str) -> None:
        try:
            self._queue.put_nowait((obj, event_type, reason, message[:1024]))
        except queue.Full:
            self._on_drop()

    def run(self, stop: threading.Event) -> None:
        while not (stop.is_set() and self._queue.empty()):
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._write(*item)
            except KubeError as exc:
                log.warning("could not record event %s: %s", item[2], exc)

    def _write(self, obj: dict, event_type: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        key = (meta.get("uid"), event_type, reason, message)
        seen = self._seen.get(key)
        if seen is not None:
            namespace, name, count = seen
            try:
                self._kube.patch_event(namespace, name, {"count": count + 1, "lastTimestamp": _now()})
                self._remember(key, (namespace, name, count + 1))
                return
            except KubeError as exc:
                if exc.status != 404:
                    raise
        namespace = meta.get("namespace") or "default"  # events about cluster-scoped objects live in default
        name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
        now = _now()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind"),
                                   "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid"),
                                   "resourceVersion": meta.get("resourceVersion")},
                "type": event_type, "reason": reason, "message": message, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": self._component},
                "reportingComponent": self._component, "reportingInstance": self._instance}
        self._kube.create_event(namespace, body)
        self._remember(key, (namespace, name, 1))

    def _remember(self, key: tuple, value: tuple) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
