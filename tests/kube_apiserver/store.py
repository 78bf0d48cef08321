"""In-memory object store with one global resourceVersion counter, a bounded event history for watches,
optimistic concurrency, finalizers, the kind-specific behaviour of `kinds` and the controllers of `controllers`."""
from __future__ import annotations

import base64
import copy
import json
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import controllers, kinds, schemas
from .errors import ApiError, already_exists, bad_request, conflict, gone, invalid, not_found
from .patch import PatchError, apply_patch
from .resources import NAMESPACES, RESOURCES
from .selectors import Selector

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
WRITES_KEPT = 100_000


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Write:
    """One write, for tests to assert the order of what clients and controllers did."""
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: str  # the plural, e.g. persistentvolumes
    namespace: str
    name: str
    by: str  # "api" (a client's request) or the controller's name
    object: dict  # as stored (as it was when deleted, for DELETED)


@dataclass(frozen=True)
class StoredEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: object  # ResourceType
    namespace: str
    object: dict
    old: dict | None
    _encoded: list = field(default_factory=list, compare=False, repr=False)

    def object_json(self) -> bytes:
        """The object as JSON, encoded once for all the watches that send it (two threads may both encode it
        the first time: the same bytes)."""
        if not self._encoded:
            self._encoded.append(json.dumps(self.object, separators=(",", ":")).encode())
        return self._encoded[0]


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class Store:
    """All methods are thread-safe. Stored object dicts are never mutated in place (every change stores a new
    dict), so they may be shared with the watch history and serialized without copying."""

    def __init__(self, history_size: int = 1000, page_limit: int = 0, volume_deleter=None):
        self.page_limit = page_limit  # if set, a list with a limit gets pages of at most this many items
        # Called with a PV the PV controller reclaims by deleting it (see controllers), before it goes: a test
        # deletes the storage behind it there, as the real deleter would.
        self.volume_deleter = volume_deleter
        self.writes: deque[Write] = deque(maxlen=WRITES_KEPT)  # every write, oldest first
        self.actor = "api"  # who writes now (set by the controllers around their writes)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        # A watch waits on its resource type's own condition: a commit wakes the watches of its type only, not
        # every open watch (a provisioner's watches of classes and namespaces woke, took the lock and looked for
        # nothing at each of a claim's writes).
        self._watches_changed = {rt.key: threading.Condition(self.lock) for rt in RESOURCES}
        # Resource plural -> the resourceVersion its watches deliver events up to (faults.hold_watches).
        self.watch_holds: dict[str, int] = {}
        self.rv = 1
        self.history_size = history_size
        self.history: deque[StoredEvent] = deque()
        self.compacted_rv = self.rv  # events with rv <= compacted_rv are no longer in the history
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {rt.key: {} for rt in RESOURCES}
        self.tracker = controllers.Tracker(self.objects)  # told of every commit: what the controllers look at
        self.watch_epoch = 0  # bumped to end all open watches
        self.drop_abruptly = False
        self.closed = False
        for name in DEFAULT_NAMESPACES:
            self.create(NAMESPACES, "", {"metadata": {"name": name}})
        self.controllers = controllers.ControllerManager(self)  # runs after the writes, in a thread of its own
        self.controllers.start()

    # --- low level (lock held) -------------------------------------------------------------------------

    def _commit(self, rt, obj: dict | None, event_type: str, old: dict | None) -> dict:
        self.rv += 1
        source = obj if obj is not None else old
        meta = source["metadata"]
        stored = {**source, "metadata": {**meta, "resourceVersion": str(self.rv)}}
        key = (meta.get("namespace", ""), meta["name"])
        objects = self.objects[rt.key]
        previous = objects.get(key)
        if obj is None:
            del objects[key]
        else:
            objects[key] = stored
        self.tracker.committed(rt, key, previous, stored if obj is not None else None, self.rv)
        self.history.append(StoredEvent(self.rv, event_type, rt, key[0], stored, old))
        self.writes.append(Write(self.rv, event_type, rt.plural, key[0], key[1], self.actor, stored))
        while len(self.history) > self.history_size:
            self.compacted_rv = self.history.popleft().rv
        self.changed.notify_all()
        self._watches_changed[rt.key].notify_all()
        return stored

    def save(self, rt, old: dict, new: dict) -> bool:
        """Stores `new` in place of `old` (used by controllers and updates); False if nothing changed.
        An object being deleted whose last finalizer went away is removed."""
        if new == old:
            return False
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new["metadata"].get("deletionTimestamp") and not kinds.blocking_finalizers(rt, new):
            self._commit(rt, None, "DELETED", new)
        else:
            self._commit(rt, new, "MODIFIED", old)
        return True

    def mark_deleted(self, rt, obj: dict) -> dict:
        """Deletes `obj`: immediately without finalizers, else by setting deletionTimestamp."""
        if not kinds.blocking_finalizers(rt, obj):
            return self._commit(rt, None, "DELETED", obj)
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        new = copy.deepcopy(obj)
        new["metadata"].update({"deletionTimestamp": now(), "deletionGracePeriodSeconds": 0,
                                "generation": obj["metadata"].get("generation", 1) + 1})
        if rt is NAMESPACES:
            new["status"] = {**new.get("status", {}), "phase": "Terminating"}
        return self._commit(rt, new, "MODIFIED", obj)

    def _current(self, rt, namespace: str, name: str) -> dict:
        obj = self.objects[rt.key].get((namespace if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    # --- API operations ---------------------------------------------------------------------------------

    def get(self, rt, namespace: str, name: str) -> dict:
        with self.lock:
            return self._current(rt, namespace, name)

    def matching(self, rt, namespace: str, selector: Selector) -> list[dict]:
        with self.lock:
            return [obj for (ns, _), obj in sorted(self.objects[rt.key].items())
                    if (not namespace or ns == namespace) and selector(obj)]

    def list(self, rt, namespace: str, selector: Selector, limit: int = 0, continue_token: str = "") -> dict:
        with self.lock:
            list_rv, start = self.rv, None
            if continue_token:
                try:
                    token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                    list_rv, start = int(token["rv"]), tuple(token["start"])
                except (ValueError, KeyError, TypeError) as e:
                    raise bad_request(f"invalid continue token: {e}") from None
                if list_rv < self.compacted_rv:
                    raise gone("The provided continue parameter is too old to display a consistent list result. "
                               "You can start a new list without the continue parameter.")
            items = [(key, obj) for key, obj in sorted(self.objects[rt.key].items())
                     if (not namespace or key[0] == namespace) and (start is None or key > start) and selector(obj)]
        metadata = {"resourceVersion": str(list_rv)}
        if limit and self.page_limit:
            limit = min(limit, self.page_limit)  # a shorter page than asked for, as etcd's may be
        if limit and len(items) > limit:
            last_key = items[limit - 1][0]
            metadata["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": list_rv, "start": list(last_key)}).encode()).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        # Items carry no kind or apiVersion: the list's own say what they are (api-conventions.md, "Lists and
        # Simple kinds"; the real server strips them when it encodes a list of a built-in kind).
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata,
                "items": [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for _, obj in items]}

    def _check_body(self, rt, namespace: str, body, validation: schemas.FieldValidation | None) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
            raise bad_request(f"the body of the request was in an unknown format - kind {kind!r} apiVersion "
                              f"{api_version!r} is not {rt.kind} {rt.api_version}")
        body = copy.deepcopy(body)
        body["kind"], body["apiVersion"] = rt.kind, rt.api_version
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return schemas.decode(rt, body, validation)

    def create(self, rt, namespace: str, body, dry_run: bool = False,
               validation: schemas.FieldValidation | None = None) -> dict:
        with self.lock:
            obj = self._check_body(rt, namespace, body, validation)
            meta = obj["metadata"]
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise invalid(rt, "", [("FieldValueRequired", "metadata.name",
                                            "Required value: name or generateName is required")])
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            name = meta["name"]
            kinds.validate_name(rt, name)
            if rt.namespaced:
                kinds.check_namespace(self, rt, namespace, name)
            if (namespace if rt.namespaced else "", name) in self.objects[rt.key]:
                raise already_exists(rt, name)
            for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
                meta.pop(field, None)
            meta.update({"uid": str(uuid.uuid4()), "creationTimestamp": now(), "generation": 1})
            kinds.prepare_create(self, rt, obj)
            if dry_run:
                return obj
            return self._commit(rt, obj, "ADDED", None)

    def _update(self, rt, namespace: str, name: str, old: dict, body, subresource: str | None,
                dry_run: bool, validation: schemas.FieldValidation | None) -> dict:
        new = self._check_body(rt, namespace, body, validation)
        meta, old_meta = new["metadata"], old["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        given_rv = meta.get("resourceVersion")
        if given_rv and given_rv != old_meta["resourceVersion"]:
            raise conflict(rt, name)
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                                     f"{old_meta['uid']}")
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status") or {}
            new = merged
        else:
            for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                          "generation", "namespace", "name", "resourceVersion"):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            if "status" in rt.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            kinds.prepare_update(self, rt, old, new)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise invalid(rt, name, [("FieldValueForbidden", "metadata.finalizers",
                                              "Forbidden: no new finalizers can be added if the object is being "
                                              "deleted")])
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if dry_run or new == old:
            return new
        self.save(rt, old, new)
        return self.objects[rt.key].get((namespace if rt.namespaced else "", name)) or {
            **new, "metadata": {**new["metadata"], "resourceVersion": str(self.rv)}}

    def update(self, rt, namespace: str, name: str, body, subresource: str | None = None,
               dry_run: bool = False, validation: schemas.FieldValidation | None = None) -> tuple[dict, bool]:
        """PUT. Returns (object, created)."""
        with self.lock:
            try:
                old = self._current(rt, namespace, name)
            except ApiError:
                if rt.create_on_update and subresource is None:
                    if isinstance(body, dict):
                        body = {**body, "metadata": {**(body.get("metadata") or {}), "name": name}}
                    return self.create(rt, namespace, body, dry_run, validation), True
                raise
            return self._update(rt, namespace, name, old, body, subresource, dry_run, validation), False

    def patch(self, rt, namespace: str, name: str, patch_type: str, body, subresource: str | None = None,
              dry_run: bool = False, validation: schemas.FieldValidation | None = None) -> dict:
        with self.lock:
            old = self._current(rt, namespace, name)
            try:
                patched = apply_patch(patch_type, old, body)
            except PatchError as e:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                              f"{e}") from None
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            # A resourceVersion in the patch is a precondition; without one the patch applies to the latest.
            return self._update(rt, namespace, name, old, patched, subresource, dry_run, validation)

    def delete(self, rt, namespace: str, name: str, options: dict | None = None, dry_run: bool = False) -> dict:
        options = options or {}
        with self.lock:
            obj = self._current(rt, namespace, name)
            preconditions = options.get("preconditions") or {}
            if preconditions.get("uid") and preconditions["uid"] != obj["metadata"]["uid"]:
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in "
                                         f"object meta: {obj['metadata']['uid']}")
            if preconditions.get("resourceVersion") and \
                    preconditions["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                         f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                                         f"{obj['metadata']['resourceVersion']}")
            if dry_run:
                return obj
            grace = kinds.deletion_grace_period(rt, obj, options)
            if grace:
                return self._terminate(rt, obj, grace)
            return self.mark_deleted(rt, obj)

    def _terminate(self, rt, obj: dict, grace: int) -> dict:
        """A graceful deletion: the object stays, Terminating, until its kubelet is done (see controllers)."""
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        new = copy.deepcopy(obj)
        new["metadata"].update({"deletionTimestamp": now(), "deletionGracePeriodSeconds": grace,
                                "generation": obj["metadata"].get("generation", 1) + 1})
        return self._commit(rt, new, "MODIFIED", obj)

    def delete_collection(self, rt, namespace: str, selector: Selector, dry_run: bool = False) -> dict:
        with self.lock:
            listing = self.list(rt, namespace, selector)
            if not dry_run:
                for obj in listing["items"]:
                    current = self.objects[rt.key].get((obj["metadata"].get("namespace", ""),
                                                        obj["metadata"]["name"]))
                    if current is not None:
                        self.mark_deleted(rt, current)
            return listing

    # --- watch support ----------------------------------------------------------------------------------

    def watches_changed(self, rt) -> threading.Condition:
        """What a watch of `rt` waits on (with the lock): notified at each commit of an `rt` object and by
        notify_all()."""
        return self._watches_changed[rt.key]

    def notify_all(self) -> None:
        """Wakes everything waiting on the store, every watch included (lock held by the caller): for a change
        that is not one object's commit (compaction, the end of the watches, closing, released holds)."""
        self.changed.notify_all()
        for condition in self._watches_changed.values():
            condition.notify_all()

    def events_after(self, cursor: int) -> list[StoredEvent]:
        """Events with rv > cursor (lock held by caller; cursor >= compacted_rv)."""
        events = []
        for event in reversed(self.history):
            if event.rv <= cursor:
                break
            events.append(event)
        events.reverse()
        return events

    def compact(self, keep: int = 0) -> int:
        """Forgets all but the last `keep` events: older resourceVersions become too old to watch from."""
        with self.lock:
            while len(self.history) > keep:
                self.history.popleft()
            self.compacted_rv = self.history[0].rv - 1 if self.history else self.rv
            self.notify_all()
            return self.compacted_rv

    def end_watches(self, abruptly: bool = False) -> None:
        with self.lock:
            self.watch_epoch += 1
            self.drop_abruptly = abruptly
            self.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.notify_all()
