"""A TCP proxy on 127.0.0.1 in front of the test PostgreSQL: it counts the round trips of the clients that connect
through it (the server's ReadyForQuery messages: one for every simple query, every Sync of the extended protocol,
and so every time a client waits for the server), and can hold every chunk back for a fixed delay each way, as a
network between two hosts would (the benchmarks' production shape: PostgreSQL on another host). Delayed chunks keep
their order and are not serialised behind each other's delay: a pipeline's messages cross the delay once, as on a
wire."""
from __future__ import annotations

import heapq
import itertools
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536


class PostgresProxy:
    def __init__(self, upstream: tuple[str, int], delay_s: float = 0.0):
        self.upstream, self.delay_s = upstream, delay_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._round_trips = 0
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="pg-proxy-accept").start()

    @property
    def round_trips(self) -> int:
        """The server's ReadyForQuery messages so far, over all the connections through the proxy."""
        with self._lock:
            return self._round_trips

    def url_for(self, url: str) -> str:
        """`url` (a database URL naming the upstream server) through this proxy, unencrypted: the proxy reads the
        server's messages (and an SSL or GSS request's one-byte answer would break their framing)."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        query = "&".join(filter(None, (parts.query, "sslmode=disable&gssencmode=disable")))
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host, query=query))

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            for source, target, messages in ((client, server, None), (server, client, _Messages())):
                line = _DelayLine(target, self.delay_s)
                threading.Thread(target=self._pump, args=(source, line, messages), daemon=True,
                                 name="pg-proxy-pump").start()

    def _pump(self, source: socket.socket, line: _DelayLine, messages: _Messages | None) -> None:
        try:
            while chunk := source.recv(CHUNK):
                if messages is not None:
                    ready = messages.feed(chunk).count(b"Z")
                    with self._lock:
                        self._round_trips += ready
                line.put(chunk)
        except OSError:
            pass
        finally:
            line.put(b"")  # the end: the other side is closed once what came before is delivered


class _Messages:
    """The types of the server's messages, read from its stream (a type byte, then a length that counts itself)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        types = []
        while len(self._buffer) >= 5:
            (length,) = struct.unpack("!I", self._buffer[1:5])
            if len(self._buffer) < 1 + length:
                break
            types.append(self._buffer[:1])
            self._buffer = self._buffer[1 + length:]
        return types


class _DelayLine:
    """Chunks delivered to `target` `delay_s` after they arrived, in order, by a thread of its own."""

    def __init__(self, target: socket.socket, delay_s: float):
        self.target, self.delay_s = target, delay_s
        self._due: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        threading.Thread(target=self._deliver, daemon=True, name="pg-proxy-line").start()

    def put(self, chunk: bytes) -> None:
        with self._ready:
            heapq.heappush(self._due, (time.monotonic() + self.delay_s, next(self._order), chunk))
            self._ready.notify()

    def _deliver(self) -> None:
        while True:
            with self._ready:
                while not self._due:
                    self._ready.wait()
                due, _, chunk = heapq.heappop(self._due)
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not chunk:
                _close(self.target)
                return
            try:
                self.target.sendall(chunk)
            except OSError:
                return


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@contextmanager
def proxied(url: str, delay_s: float = 0.0) -> Iterator[tuple[PostgresProxy, str]]:
    """A proxy in front of the server `url` names, and `url` through it; closed at the end."""
    parts = urlsplit(url)
    proxy = PostgresProxy((parts.hostname, parts.port), delay_s)
    try:
        yield proxy, proxy.url_for(url)
    finally:
        proxy.close()


@contextmanager
def proxy_process(url: str, delay_ms: float) -> Iterator[str]:
    """`url` through a proxy in a process of its own (whose threads then compete with nobody's for the interpreter's
    lock), stopped by its pid at the end."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "tests.support.pg_proxy", url, "--delay-ms", str(delay_ms)],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def main() -> None:
    """Serve a proxy until interrupted: `python -m tests.support.pg_proxy URL [--delay-ms 0.25]` prints URL through
    it (the benchmarks' PostgreSQL on "another host")."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("url", help="the PostgreSQL database's URL (its server on 127.0.0.1)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="each way, for every chunk")
    args = parser.parse_args()
    with proxied(args.url, args.delay_ms / 1000) as (proxy, url):
        print(url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"round trips: {proxy.round_trips}", flush=True)


if __name__ == "__main__":
    main()
