"""The bare WSGI app of benchmarks/api_vs_binding.py's `stack` path: the raw RBD calls behind the same server stack
as robin (robin serve's worker class, workers, threads and keep-alive), so that the API's added time
splits into what the stack costs (HTTP client, gunicorn, its thread hand-overs) and what robin costs.

Each request makes its binding call in the request thread on one rados connection per worker, made on the first
request (a librados handle must not cross gunicorn's fork); no database, no authentication, no hand-over to
another thread. `POST /images` (JSON `{"name", "size_bytes"}`) is `RBD().create`, `PATCH /images/<name>` (JSON
`{"size_bytes"}`) `Image.resize`, `DELETE /images/<name>` `RBD().remove`; `GET /` answers 200 (readiness).
`POST /echo` reads and answers as `POST /images` does without any Ceph call: the server stack alone
(benchmarks/stack_split.py); `GET /worker` answers the worker's pid.

    ROBIN_BENCH_CEPH_CONF=ceph.conf ROBIN_BENCH_POOL=rbd ROBIN_BENCH_FEATURES=61 \
        gunicorn --worker-class robin.gunicorn_worker.ThreadWorker ... benchmarks.bare_rbd_app:app
"""
import json
import os
import threading

import rados
import rbd

CONF_ENV, POOL_ENV, FEATURES_ENV = "ROBIN_BENCH_CEPH_CONF", "ROBIN_BENCH_POOL", "ROBIN_BENCH_FEATURES"
PREFIX = "/images"
_lock = threading.Lock()
_ioctx: rados.Ioctx | None = None


def ioctx() -> rados.Ioctx:
    """The worker's pool context, connected once (kept for the worker's life, like robin's connection)."""
    global _ioctx
    with _lock:
        if _ioctx is None:
            cluster = rados.Rados(conffile=os.environ[CONF_ENV])
            cluster.connect(timeout=10)
            _ioctx = cluster.open_ioctx(os.environ[POOL_ENV])
        return _ioctx


def body(environ) -> dict:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return json.loads(environ["wsgi.input"].read(length)) if length else {}


def create(environ, make=True) -> tuple[str, bytes]:
    wanted = body(environ)
    if make:
        rbd.RBD().create(ioctx(), wanted["name"], wanted["size_bytes"], old_format=False,
                         features=int(os.environ[FEATURES_ENV]))
    return "201 Created", json.dumps({"name": wanted["name"], "size_bytes": wanted["size_bytes"]}).encode()


def resize(environ, name: str) -> tuple[str, bytes]:
    size = body(environ)["size_bytes"]
    with rbd.Image(ioctx(), name) as image:
        image.resize(size)
    return "200 OK", json.dumps({"name": name, "size_bytes": size}).encode()


def remove(name: str) -> tuple[str, bytes]:
    rbd.RBD().remove(ioctx(), name)
    return "204 No Content", b""


def route(environ) -> tuple[str, bytes]:
    method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
    name = path[len(PREFIX) + 1:] if path.startswith(PREFIX + "/") else None
    if method == "POST" and path == PREFIX:
        return create(environ)
    if method == "POST" and path == "/echo":
        return create(environ, make=False)
    if method == "PATCH" and name:
        return resize(environ, name)
    if method == "DELETE" and name:
        return remove(name)
    if method == "GET" and path == "/":
        return "200 OK", b"{}"
    if method == "GET" and path == "/worker":
        return "200 OK", str(os.getpid()).encode()
    return "404 Not Found", b"{}"


def app(environ, start_response):
    status, answer = route(environ)
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]
