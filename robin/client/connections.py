"""Kept-alive HTTP/1.1 connections straight on http.client, for robin's own clients' hot paths (robin's REST client,
the provisioner's Kubernetes writes): urllib3's pool costs about twice the client CPU of a request (its retry,
timeout and header objects, its response wrapper, benchmarks/robin_client_cpu.py)."""
from __future__ import annotations

import http.client
import select
import ssl
import threading
from collections.abc import Callable


class DirectConnections:
    """Kept-alive http.client connections to one host, shared by threads: each request takes an idle one (or opens
    one), and gives it back once the answer is read whole; at most `size` are kept idle. As urllib3 does, one that
    the server has closed while idle (or that holds unread bytes) is not reused but closed: no request is sent
    twice. Connect and read timeouts as urllib3's. With `tls`, HTTPS, each new connection with the context `tls()`
    makes then (as urllib3 reads its CA and certificate files anew per connection): it verifies the server (its
    certificate and, when the context checks hostnames, that it is `host`'s) and holds the client's certificate."""

    def __init__(self, host: str, port: int, size: int, connect_timeout: float, read_timeout: float,
                 tls: Callable[[], ssl.SSLContext] | None = None):
        self.host, self.port, self.size, self.tls = host, port, size, tls
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def send(self, method: str, target: str, body: bytes | None,
             headers: dict) -> tuple[http.client.HTTPResponse, bytes]:
        """The answer (read: its status, reason and headers) and its body; OSError (ssl.SSLError too) or
        http.client.HTTPException when none came whole."""
        connection = self._take()
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return response, data

    def close(self) -> None:
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            if _usable(connection):
                return connection
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        if self.tls is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        else:
            connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.connect_timeout,
                                                     context=self.tls())
        connection.connect()
        connection.sock.settimeout(self.read_timeout)
        return connection

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.close()


def _usable(connection: http.client.HTTPConnection) -> bool:
    """Connected, and nothing to read: an idle connection that is readable was closed by the server (or holds
    bytes no request asked for)."""
    if connection.sock is None:
        return False
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return not poller.poll(0)
