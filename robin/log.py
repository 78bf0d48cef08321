"""Log lines with the request id when there is one: one JSON object a line (for collectors), or a human line
(at a terminal), as ROBIN_LOG_FORMAT says."""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

from robin.metrics import REQUEST_SECONDS, WORKER_REQUESTS

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if has_request_context() and g.get("request_id"):
            entry["request_id"] = g.request_id
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class HumanFormatter(logging.Formatter):
    """A line for people at a terminal: time, level, logger, message, then the fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: value for key, value in vars(record).items() if key not in _STANDARD}
        if has_request_context() and g.get("request_id"):
            fields["request_id"] = g.request_id
        line = (f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}Z {record.levelname:<7} {record.name}: "
                f"{record.getMessage()}")
        line += "".join(f" {key}={value}" for key, value in fields.items())
        return line + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def configure(level: str, log_format: str = "json") -> None:
    """Log lines on stderr: `log_format` human, json, or auto (human when stderr is a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    human = log_format == "human" or (log_format == "auto" and sys.stderr.isatty())
    formatter = HumanFormatter() if human else JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every plugin it loads at INFO; robin says what was migrated itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)


access_log = logging.getLogger("robin.access")


def install_request_logging(app: Flask) -> None:
    """A request id for every request (echoed as X-Request-Id), a latency histogram by route,
    and one access log line."""
    from robin.audit.models import REQUEST_ID_LENGTH

    # A client's id (a proxy's, a tracer's) is kept when it is plain and fits the audit column; anything else
    # is replaced, so that no header can break the audit insert or smuggle text into logs.
    well_formed = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_LENGTH}}}")

    @app.before_request
    def _start():
        sent = request.headers.get("X-Request-Id", "")
        g.request_id = sent if well_formed.fullmatch(sent) else str(uuid.uuid4())
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule else "<unmatched>"
        REQUEST_SECONDS.labels(request.method, route, str(response.status_code)).observe(elapsed)
        WORKER_REQUESTS.inc()
        response.headers["X-Request-Id"] = g.get("request_id", "")
        access_log.info("request", extra={"method": request.method, "path": request.path,
                                          "status": response.status_code, "duration_ms": round(elapsed * 1000, 2)})
        return response
