"""The kept-alive connections of robin's clients (robin.client.connections.DirectConnections), through robin's REST
client, against a stand-in HTTP server that behaves as a server may and robin serve cannot be made to on demand: it
closes a kept-alive connection while the client holds it idle, closes one without answering, or never answers.
(Answers and errors against robin itself: tests/integration/test_robin_client.py.)"""
from __future__ import annotations

import socket
import threading

import pytest

from robin.client import ClientConfig, RobinApiError, RobinClient
from tests.support.http_standin import read_request

ANSWER = b'{"name": "img"}'


class StandIn:
    """Answers each request per `behaviour` ("keep", "close-silently", "close-announced", "drop", "mute"), and
    counts the requests and the connections it saw."""

    def __init__(self, behaviour: str):
        self.behaviour, self.requests, self.connections = behaviour, 0, 0
        self.closed = threading.Semaphore(0)  # released once per connection it has closed
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        try:
            while read_request(reader):
                self.requests += 1
                if self.behaviour == "mute":
                    continue
                if self.behaviour == "drop":
                    break
                announced = b"Connection: close\r\n" if self.behaviour == "close-announced" else b""
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + announced
                             + b"Content-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER)
                if self.behaviour != "keep":
                    break
        except OSError:
            pass
        finally:
            reader.close()
            sock.close()
            self.closed.release()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def stand_in(request):
    servers = []

    def make(behaviour: str) -> StandIn:
        servers.append(StandIn(behaviour))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def client_of(server: StandIn, **timeouts) -> RobinClient:
    client = RobinClient(ClientConfig(url=server.url, token="t", **timeouts))
    assert client._pool is not None  # plain http, no proxy: the direct way
    return client


def test_a_kept_alive_connection_serves_the_next_request(stand_in):
    server = stand_in("keep")
    client = client_of(server)
    try:
        assert [client.get_project("p") for _ in range(3)] == [{"name": "img"}] * 3
        assert (server.requests, server.connections) == (3, 1)
    finally:
        client.close()


@pytest.mark.parametrize("behaviour", ["close-silently", "close-announced"])
def test_a_connection_the_server_closed_is_not_reused(stand_in, behaviour):
    """Closed after each answer, announced or not: each request goes out once, on a new connection."""
    server = stand_in(behaviour)
    client = client_of(server)
    try:
        for _ in range(3):
            assert client.create_volume("rbd", "p", "img", 1) == {"name": "img"}
            assert server.closed.acquire(timeout=10)  # closed while idle, not while the next request is on its way
        assert (server.requests, server.connections) == (3, 3)
    finally:
        client.close()


def test_a_request_without_an_answer_is_unreachable_and_not_sent_again(stand_in):
    server = stand_in("drop")
    client = client_of(server)
    try:
        with pytest.raises(RobinApiError) as failed:
            client.create_volume("rbd", "p", "img", 1)
        assert failed.value.status == 0 and failed.value.code == "unreachable"
        assert server.requests == 1  # a create that may have reached robin is never repeated
    finally:
        client.close()


def test_an_answer_that_never_comes_ends_at_the_read_timeout(stand_in):
    server = stand_in("mute")
    client = client_of(server, read_timeout=0.2)
    try:
        with pytest.raises(RobinApiError) as failed:
            client.get_project("p")
        assert failed.value.code == "unreachable" and "timed out" in failed.value.message
        assert server.requests == 1
    finally:
        client.close()
