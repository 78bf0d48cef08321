"""A PostgreSQL server that accepts a connection and then never answers (a stopped server: the
kernel still completes the TCP handshake) must cost a request one connect timeout, not a worker
thread for good."""
from __future__ import annotations

import socket
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from robin.db import POSTGRES_CONNECT_ARGS, Database


@pytest.fixture
def silent_server():
    """A listening socket nobody reads from: connects succeed, the startup message gets no answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_silent_database_server_fails_a_request_within_the_connect_timeout(silent_server):
    database = Database()
    database.configure(f"postgresql+psycopg://robin@127.0.0.1:{silent_server}/robin")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            with database.reading() as session:
                session.execute(text("SELECT 1"))
        assert time.monotonic() - started < POSTGRES_CONNECT_ARGS["connect_timeout"] + 5
    finally:
        database.dispose()


def test_a_request_while_the_database_is_unreachable_is_a_503_with_a_stable_code(app, admin, settings, silent_server):
    from robin.db import db

    db.configure(f"postgresql+psycopg://robin@127.0.0.1:{silent_server}/robin")
    try:
        response = admin.get("/api/v2/projects")
    finally:
        db.configure(settings.database_url)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"
    assert admin.get("/api/v2/projects").status_code == 200  # back once the database answers
