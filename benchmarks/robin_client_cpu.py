"""The client CPU of one request of robin's REST client (robin.client.rest.RobinClient), as the provisioner and the
CSI shim make it: a volume's create (`POST`, JSON both ways) against a stand-in server in another process that
answers at once with a fixed 201 of a robin volume's size and headers, so only the client's own work is timed
(`time.thread_time` of the calling thread). With --before, the RobinClient of another checkout is timed too, in
alternating rounds, each in its own child process.

    .venv/bin/python benchmarks/robin_client_cpu.py [--requests 3000] [--rounds 3] [--before <checkout>]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WARMUP = 200
ANSWER = json.dumps({"name": "pvc-0a1b2c3d-1111-2222-3333-444455556666", "kind": "rbd", "project": "bench",
                     "cluster": "default", "pool": "rbd", "size_bytes": 67108864, "state": "available",
                     "created_for": "k8s-claim:0a1b2c3d-1111-2222-3333-444455556666", "features": ["layering"],
                     "metadata": {}, "created_at": "2026-12-07T22:00:00Z"}).encode()


def serve(listener: socket.socket) -> None:
    """Answers every request on every connection with ANSWER, as gunicorn would frame it (Content-Length)."""
    head = (b"HTTP/1.1 201 Created\r\nServer: gunicorn\r\nDate: Mon, 07 Dec 2026 22:00:00 GMT\r\n"
            b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER))

    def connection(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        while reader.readline():
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            sock.sendall(head + ANSWER)

    while True:
        sock, _ = listener.accept()
        threading.Thread(target=connection, args=(sock,), daemon=True).start()


def measure(checkout: str, url: str, requests: int) -> float:
    """Client CPU microseconds per create of `checkout`'s RobinClient (run in this process)."""
    sys.path.insert(0, checkout)
    from robin.client import ClientConfig, RobinClient

    client = RobinClient(ClientConfig(url=url, token="bench-token"))
    for _ in range(WARMUP):
        client.create_volume("rbd", "bench", "pvc-x", 67108864, created_for="k8s-claim:x")
    started = time.thread_time()
    for _ in range(requests):
        client.create_volume("rbd", "bench", "pvc-x", 67108864, created_for="k8s-claim:x")
    used = time.thread_time() - started
    client.close()
    return used / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another checkout whose RobinClient is timed in alternation")
    parser.add_argument("--measure", nargs=2, metavar=("CHECKOUT", "URL"), help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.measure:
        print(measure(args.measure[0], args.measure[1], args.requests))
        return 0
    listener = socket.create_server(("127.0.0.1", 0))
    server = subprocess.Popen([sys.executable, "-c", "import socket, sys; sys.path.insert(0, sys.argv[1]); "
                               "from benchmarks.robin_client_cpu import serve; "
                               "serve(socket.socket(fileno=int(sys.argv[2])))", str(REPO), str(listener.fileno())],
                              pass_fds=(listener.fileno(),))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    checkouts = {"after": str(REPO)} | ({"before": str(Path(args.before).resolve())} if args.before else {})
    print(f"load {os.getloadavg()[0]:.2f}; client CPU per create, microseconds ({args.requests} requests a round)")
    try:
        for number in range(args.rounds):
            for label, checkout in checkouts.items():
                child = subprocess.run([sys.executable, __file__, "--requests", str(args.requests), "--measure",
                                        checkout, url], capture_output=True, text=True, check=True,
                                       env={**os.environ, "no_proxy": "127.0.0.1"})
                print(f"round {number + 1}: {label} {float(child.stdout):.1f} (load {os.getloadavg()[0]:.2f})",
                      flush=True)
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
