"""The bare WSGI app of benchmarks/load.py: the same constant body for every request, so that gunicorn with
robin's settings serving it shows the ceiling of the server stack (and of the load generator) on this machine.

    ROBIN_BENCH_BARE_BODY=page.json gunicorn --worker-class gthread ... benchmarks.bare_app:app
"""
import os
from pathlib import Path

BODY_ENV = "ROBIN_BENCH_BARE_BODY"
# Read once per worker, at import: the request path does nothing but hand it out.
BODY = Path(os.environ[BODY_ENV]).read_bytes()
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
