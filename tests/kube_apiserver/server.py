"""HTTP front end: routing, list/watch streaming, discovery, auth, the /_faults admin API, and
`KubeApiServer`, which runs it in a background thread on 127.0.0.1."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from . import protobuf, rbac, resources, schemas
from .errors import ApiError, bad_request, path_not_found, status_object, unsupported_media_type
from .faults import Faults
from .patch import PATCH_TYPES
from .selectors import Selector
from .store import Store

JSON = "application/json"
BODY_TYPES = (JSON, "application/yaml", protobuf.CONTENT_TYPE)
APPLY_PATCH_PREFIX = "application/apply-patch"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5, which a burst of new connections (a thousand PVCs from 16 client
    # threads plus the provisioner's workers) can overflow; a real API server listens with the kernel's somaxconn.
    request_queue_size = 1024

    def __init__(self, address, api: KubeApiServer):
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


def _truthy(value: str | None) -> bool:
    return value in ("true", "1", "True")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self):
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self):
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        if self.server.api.verbose:
            sys.stderr.write(f"kube-apiserver: {self.address_string()} {format % args}\n")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # --- plumbing ---------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, code: int, body: bytes, content_type: str = JSON, headers=None) -> None:
        """headers: a dict or a list of (name, value) pairs (a name may repeat)."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in (headers.items() if isinstance(headers, dict) else headers or []):
            self.send_header(name, value)
        # What end_headers() does, with the body in the same write: one send, and one segment for the client to
        # wait for, instead of two.
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def _send_json(self, code: int, obj, headers=None) -> None:
        self._send(code, json.dumps(obj).encode(), headers=headers)

    def _parse_body(self, raw: bytes, patch: bool = False):
        """The request body as an object; a 415 for a media type the real server would not read here (so that
        a client can tell, and, for CBOR, fall back to JSON) or this one cannot."""
        content_type = (self.headers.get("Content-Type") or JSON).split(";")[0].strip().lower()
        if patch:
            _check_patch_type(content_type)
        if not raw.strip():
            return None
        if not patch and content_type not in BODY_TYPES:
            raise unsupported_media_type(BODY_TYPES)
        if content_type == protobuf.CONTENT_TYPE:
            return _decode_protobuf(raw)
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the request body is not valid {content_type}: {e}") from None

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        path = "/" + url.path.strip("/")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            raw = self._read_body()
            if path in ("/healthz", "/livez", "/readyz"):
                self._send(200, b"ok", "text/plain; charset=utf-8")
                return
            self.user = api.authenticate(self.headers.get("Authorization"))
            if path == "/_faults" or path.startswith("/_faults/"):
                if not self.user.unrestricted:
                    raise ApiError(403, "Forbidden", f'User "{self.user.name}" cannot use the fault injection API')
                self._faults(method, path, self._parse_body(raw) or {})
                return
            api.faults.check(method, path)
            self._route(method, path, query, raw)
        except ApiError as e:
            self._send_json(e.code, e.status(), e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - answered as a 500, as the real server does
            traceback.print_exc()
            self._send_json(500, status_object(500, "InternalError", f"internal error: {e!r}"))

    def _faults(self, method: str, path: str, body: dict) -> None:
        faults = self.server.api.faults
        action = path[len("/_faults"):].strip("/")
        if method == "GET" and action == "":
            self._send_json(200, faults.state())
            return
        if method != "POST":
            raise ApiError(405, "MethodNotAllowed", "use POST")
        if action == "fail":
            faults.fail_requests(status=int(body.get("status", 500)), count=body.get("count"),
                                 seconds=body.get("seconds"), retry_after=body.get("retryAfter"),
                                 path_contains=body.get("pathContains"), method=body.get("method"))
        elif action == "clear":
            faults.clear()
        elif action == "drop-watches":
            faults.drop_watches(abruptly=bool(body.get("abruptly", False)))
        elif action == "controllers":
            faults.controllers(delay=body.get("delay"), paused=body.get("paused"))
        elif action == "short-pages":
            faults.short_pages(int(body.get("limit", 0)))
        elif action == "compact":
            self._send_json(200, {"compactedResourceVersion": str(faults.compact(int(body.get("keep", 0))))})
            return
        else:
            raise path_not_found()
        self._send_json(200, faults.state())

    # --- routing ----------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict, raw: bytes) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if method == "GET":
            document = self._discovery(path, parts)
            if document is not None:
                self._send_json(200, document)
                return
        if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise path_not_found()
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        rt = resources.BY_PATH.get((group, version, rest[0]))
        if rt is None or len(rest) > 3 or (namespace and not rt.namespaced) or (
                rt.namespaced and not namespace and len(rest) > 1):
            raise path_not_found()
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and subresource not in rt.subresources:
            raise path_not_found()
        verb = rbac.verb(method, name, _truthy(query.get("watch")))
        if not rbac.allowed(self.server.api.store, self.user, verb, rt, namespace, name, subresource):
            raise rbac.forbidden(self.user, verb, rt, namespace, name, subresource)
        self._serve_resource(method, rt, namespace, name, subresource, query, raw)

    def _discovery(self, path: str, parts: list[str]):
        api = self.server.api
        if path == "/version":
            return resources.version_info(api.version)
        if path == "/api":
            return resources.api_versions(f"127.0.0.1:{api.port}")
        if path == "/api/v1":
            return resources.api_resource_list("", "v1")
        if path == "/apis":
            return resources.api_group_list()
        if path == "/openapi/v3":
            return resources.openapi_v3_root()
        if path.startswith("/openapi/v3/"):
            gv = parts[2:]
            group, version = ("", gv[1]) if gv[:1] == ["api"] and len(gv) == 2 else (
                (gv[1], gv[2]) if gv[:1] == ["apis"] and len(gv) == 3 else ("?", "?"))
            return resources.openapi_v3_group_version(group, version) or _raise(path_not_found())
        if parts and parts[0] == "apis" and len(parts) == 2:
            return resources.api_group(parts[1]) or _raise(path_not_found())
        if parts and parts[0] == "apis" and len(parts) == 3:
            return resources.api_resource_list(parts[1], parts[2]) or _raise(path_not_found())
        return None

    def _serve_resource(self, method, rt, namespace, name, subresource, query, raw) -> None:
        store = self.server.api.store
        dry_run = "dryRun" in query and query["dryRun"] == "All"
        body = self._parse_body(raw, patch=method == "PATCH")
        validation = schemas.FieldValidation(query.get("fieldValidation") or "Warn")
        if name is None:
            selector = Selector(query.get("labelSelector"), query.get("fieldSelector"))
            if method == "GET":
                if _truthy(query.get("watch")):
                    self._watch(rt, namespace, selector, query)
                else:
                    limit = int(query.get("limit") or 0)
                    self._send_json(200, store.list(rt, namespace, selector, limit, query.get("continue", "")))
            elif method == "POST":
                created = store.create(rt, namespace, body, dry_run, validation)
                self._send_json(201, created, _warning_headers(validation))
            elif method == "DELETE":
                self._send_json(200, store.delete_collection(rt, namespace, selector, dry_run))
            else:
                raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                        f"resource ({method})")
            return
        if method == "GET":
            self._send_json(200, store.get(rt, namespace, name))
        elif method == "PUT":
            obj, created = store.update(rt, namespace, name, body, subresource, dry_run, validation)
            self._send_json(201 if created else 200, obj, _warning_headers(validation))
        elif method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            patched = store.patch(rt, namespace, name, content_type, body, subresource, dry_run, validation)
            self._send_json(200, patched, _warning_headers(validation))
        elif method == "DELETE" and subresource is None:
            options = body if isinstance(body, dict) else {}
            self._send_json(200, store.delete(rt, namespace, name, options, dry_run))
        else:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                    f"resource ({method})")

    # --- watch ------------------------------------------------------------------------------------------

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _write_event(self, event_type: str, obj: dict) -> None:
        self._write_chunk(json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n")

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _watch(self, rt, namespace: str, selector: Selector, query: dict) -> None:
        store = self.server.api.store
        with store.lock:
            self.server.api.watch_requests += 1
        rv_param = query.get("resourceVersion", "")
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise bad_request(f"invalid resourceVersion {rv_param!r}")
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        send_initial = _truthy(query.get("sendInitialEvents"))
        deadline = time.monotonic() + timeout
        with store.lock:
            epoch = store.watch_epoch
            initial, expired = [], None
            if rv_param in ("", "0") or send_initial:
                initial = store.matching(rt, namespace, selector)
                cursor = store.rv
            else:
                cursor = int(rv_param)
                if cursor < store.compacted_rv:
                    expired = f"too old resource version: {cursor} ({store.compacted_rv + 1})"
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            if expired:
                self._write_event("ERROR", status_object(410, "Expired", expired))
                self._write_chunk(b"")
                return
            for obj in initial:
                self._write_event("ADDED", obj)
            if send_initial and bookmarks:
                self._write_event("BOOKMARK", self._bookmark(rt, cursor, initial_end=True))
            self._stream(rt, namespace, selector, cursor, epoch, deadline, bookmarks)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _bookmark(self, rt, rv: int, initial_end: bool = False) -> dict:
        metadata = {"resourceVersion": str(rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": metadata}

    def _stream(self, rt, namespace, selector, cursor, epoch, deadline, bookmarks) -> None:
        api, store = self.server.api, self.server.api.store
        next_bookmark = time.monotonic() + api.bookmark_interval
        while True:
            events, end, expired, bookmark = [], None, None, None
            with store.lock:
                while True:
                    now = time.monotonic()
                    if store.closed:
                        end = "clean"
                    elif store.watch_epoch != epoch:
                        end = "abrupt" if store.drop_abruptly else "clean"
                    elif cursor < store.compacted_rv:
                        expired = f"too old resource version: {cursor} ({store.compacted_rv + 1})"
                    elif now >= deadline:
                        end = "clean"
                    else:
                        events, cursor = _deliverable(store, rt, cursor)
                        if not events and bookmarks and now >= next_bookmark:
                            bookmark = cursor
                    if end or expired or events or bookmark is not None:
                        break
                    waits = [deadline - now, 1.0] + ([next_bookmark - now] if bookmarks else [])
                    store.watches_changed(rt).wait(max(0.01, min(waits)))
                    break  # back outside the lock to notice a vanished client
            if end == "abrupt":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if end == "clean":
                self._write_chunk(b"")
                return
            if expired:
                self._write_event("ERROR", status_object(410, "Expired", expired))
                self._write_chunk(b"")
                return
            lines = [line for line in (_watch_line(rt, namespace, selector, event) for event in events) if line]
            if lines:  # one chunk for all: one write, not one per event (each is still a line of its own)
                self._write_chunk(b"".join(lines))
            if bookmark is not None:
                self._write_event("BOOKMARK", self._bookmark(rt, bookmark))
                next_bookmark = time.monotonic() + api.bookmark_interval
            if not events and bookmark is None and self._client_gone():
                self.close_connection = True
                return

def _watch_line(rt, namespace, selector, event) -> bytes | None:
    """The line a watch of `rt` in `namespace` (all if empty) with `selector` sends for a stored event, or None: a
    MODIFIED object entering the selection is ADDED to the watch, one leaving it DELETED."""
    if event.resource is not rt or (namespace and event.namespace != namespace):
        return None
    now_matches = selector(event.object)
    event_type = event.type
    if event_type == "MODIFIED":
        was_matching = selector(event.old)
        if now_matches and not was_matching:
            event_type = "ADDED"
        elif was_matching and not now_matches:
            event_type = "DELETED"
        elif not now_matches:
            return None
    elif not now_matches:
        return None
    # The object's JSON is made once per event for every watch (see StoredEvent).
    return b'{"type":"%s","object":%s}\n' % (event_type.encode(), event.object_json())


def _deliverable(store, rt, cursor: int) -> tuple[list, int]:
    """The events a watch of `rt` at `cursor` gets now, and its next cursor: all after it, or (faults.hold_watches)
    only those up to the held resourceVersion (lock held by the caller)."""
    held = store.watch_holds.get(rt.plural)
    if held is None:
        return store.events_after(cursor), store.rv
    if cursor >= held:
        return [], cursor
    return [event for event in store.events_after(cursor) if event.rv <= held], min(store.rv, held)


def _warning_headers(validation: schemas.FieldValidation) -> list[tuple[str, str]]:
    """Warnings as the real server sends them (RFC 7234's 299 warn-code), which client-go and kubectl print."""
    return [("Warning", f"299 - {json.dumps(text)}") for text in validation.warnings]


def _check_patch_type(content_type: str) -> None:
    if content_type.startswith(APPLY_PATCH_PREFIX):
        raise ApiError(415, "UnsupportedMediaType", f"server-side apply ({content_type}) is not modelled by this "
                                                    f"test server: send a JSON, merge or strategic merge patch "
                                                    f"(kubectl apply without --server-side)")
    if content_type not in PATCH_TYPES:
        raise unsupported_media_type(PATCH_TYPES)


def _decode_protobuf(raw: bytes) -> dict:
    try:
        return protobuf.decode(raw)
    except protobuf.UnknownKind as e:
        known = ", ".join(kind for _, kind in protobuf.KINDS)
        raise ApiError(415, "UnsupportedMediaType", f"this test server reads {protobuf.CONTENT_TYPE} bodies of "
                                                    f"{known} only, not of {e}: send it as {JSON}") from None
    except protobuf.ProtobufError as e:
        raise bad_request(f"the request body is not valid {protobuf.CONTENT_TYPE}: {e}") from None


def _raise(error: Exception):
    raise error


class KubeApiServer:
    """A small Kubernetes API server for tests, served over plain HTTP on 127.0.0.1 in a background thread.

        with KubeApiServer.running() as server:
            server.url, server.kubeconfig_path, server.token, server.store, server.faults
    """

    def __init__(self, port: int = 0, kubeconfig_path: str | None = None, token: str | None = None,
                 history_size: int = 1000, bookmark_interval: float = 5.0, verbose: bool = False,
                 page_limit: int = 0, volume_deleter=None):
        self.host = "127.0.0.1"
        self.requested_port = port
        self.token = token or secrets.token_hex(16)
        self.service_account_tokens: dict[str, rbac.User] = {}
        self.store = Store(history_size, page_limit, volume_deleter)
        self.faults = Faults(self.store)
        self.bookmark_interval = bookmark_interval
        self.version = resources.DEFAULT_VERSION  # what /version reports; a test may set another, even while serving
        self.verbose = verbose
        self.watch_requests = 0  # watch requests served so far (to see clients reconnect)
        self.kubeconfig_path = kubeconfig_path
        self._own_dir: str | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self.requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> KubeApiServer:
        self._httpd = _HTTPServer((self.host, self.requested_port), self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"kube-apiserver:{self.port}", daemon=True)
        self._thread.start()
        if self.kubeconfig_path is None:
            self._own_dir = tempfile.mkdtemp(prefix="kube-apiserver-")
            self.kubeconfig_path = os.path.join(self._own_dir, "kubeconfig")
        self.write_kubeconfig(self.kubeconfig_path)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self.store.close()
        self._httpd.shutdown()
        with self._httpd.connections_lock:
            connections = list(self._httpd.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, **kwargs):
        server = cls(**kwargs).start()
        try:
            yield server
        finally:
            server.stop()

    def authenticate(self, authorization: str | None) -> rbac.User:
        """The caller: client-go (kubectl) never sends credentials over plain http, so a request without any is
        served as anonymous (allowed everything, see rbac); the server's token is an administrator's; a
        ServiceAccount's token its account's; anything else is a 401."""
        if authorization is None:
            return rbac.ANONYMOUS
        if authorization == f"Bearer {self.token}":
            return rbac.ADMIN
        user = self.service_account_tokens.get(authorization.removeprefix("Bearer "))
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token of the ServiceAccount `namespace`/`name` (as the TokenRequest API hands a pod): RBAC
        decides what it may do."""
        token = secrets.token_hex(16)
        self.service_account_tokens[token] = rbac.service_account(namespace, name)
        return token

    def kubeconfig(self, namespace: str = "default", token: str | None = None) -> dict:
        return {"apiVersion": "v1", "kind": "Config", "preferences": {},
                "clusters": [{"name": "robin-test", "cluster": {"server": self.url}}],
                "users": [{"name": "robin-test", "user": {"token": token or self.token}}],
                "contexts": [{"name": "robin-test", "context": {"cluster": "robin-test", "user": "robin-test",
                                                                 "namespace": namespace}}],
                "current-context": "robin-test"}

    def write_kubeconfig(self, path: str, namespace: str = "default", token: str | None = None) -> str:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(self.kubeconfig(namespace, token), f, sort_keys=False)
        return path
