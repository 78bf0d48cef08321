"""The bare WSGI apps of benchmarks/load.py, run by gunicorn with robin's settings to show the server stack's
ceilings on this machine:

- `app`: the same constant body for every request (the ceiling of reads, and of the load generator);
- `create`: every request does one raw `rbd.RBD().create` (1 GiB, robin's default features, a new name each) on
  the worker's one kept cluster connection and answers 201: the ceiling of writes through the same server stack,
  with none of robin's work (database, quota, audit, state machine) around the binding call.

    ROBIN_BENCH_BARE_BODY=page.json gunicorn --worker-class gthread ... benchmarks.bare_app:app
    ROBIN_BENCH_CEPH_CONF=ceph.conf gunicorn --worker-class gthread ... benchmarks.bare_app:create
"""
import os
import threading
import uuid
from pathlib import Path

BODY_ENV = "ROBIN_BENCH_BARE_BODY"
CEPH_CONF_ENV = "ROBIN_BENCH_CEPH_CONF"
IMAGE_PREFIX = "bare-"  # what load.py removes afterwards on a cluster it did not start
POOL = "rbd"
GiB = 2**30
# Read once per worker, at import: the request path does nothing but hand it out.
BODY = Path(os.environ[BODY_ENV]).read_bytes() if BODY_ENV in os.environ else b""
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


class Ceph:
    """One cluster connection and pool context per worker, made at its first request (after gunicorn's fork: a
    librados handle must not cross one) and kept, as robin keeps its own."""

    def __init__(self):
        self.lock, self.ioctx, self.features = threading.Lock(), None, None

    def get(self):
        with self.lock:
            if self.ioctx is None:
                import rados

                from robin.ceph import rbd_ops
                from robin.config import Settings

                cluster = rados.Rados(conffile=os.environ[CEPH_CONF_ENV])
                cluster.connect(timeout=10)
                self.features = rbd_ops.feature_mask(Settings().rbd_default_features)
                self.ioctx = cluster.open_ioctx(POOL)
            return self.ioctx, self.features


CEPH = Ceph()


def create(environ, start_response):
    import rbd

    ioctx, features = CEPH.get()
    name = f"{IMAGE_PREFIX}{uuid.uuid4().hex}"
    rbd.RBD().create(ioctx, name, GiB, old_format=False, features=features)
    body = name.encode()
    start_response("201 Created", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
