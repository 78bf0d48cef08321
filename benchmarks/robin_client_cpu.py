"""The client CPU of one request of robin's own clients, as the provisioner makes them: robin's REST client
(robin.client.rest.RobinClient) creating a volume (`POST`, JSON both ways), and robin.kube.client.Kube creating an
Event (`POST`; a claim's other three writes are requests of the same shape), against a stand-in server in another
process that answers at once with a fixed 201 of a robin volume's size, so only the client's own work is timed
(`time.thread_time` of the calling thread). With --before, another checkout's clients are timed too, in
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
    """Answers every request on every connection with ANSWER, as gunicorn would frame it (Content-Length). Run in a
    process of its own, with the checkout's root on its path."""
    from tests.support.http_standin import read_request

    head = (b"HTTP/1.1 201 Created\r\nServer: gunicorn\r\nDate: Mon, 07 Dec 2026 22:00:00 GMT\r\n"
            b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER))

    def connection(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        while read_request(reader):
            sock.sendall(head + ANSWER)

    while True:
        sock, _ = listener.accept()
        threading.Thread(target=connection, args=(sock,), daemon=True).start()


def measure(checkout: str, url: str, requests: int) -> dict[str, float]:
    """Client CPU microseconds per request of `checkout`'s clients (run in this process)."""
    sys.path.insert(0, checkout)
    from kubernetes.client import ApiClient, Configuration

    from robin.client import ClientConfig, RobinClient
    from robin.kube.client import Kube

    robin = RobinClient(ClientConfig(url=url, token="bench-token"))
    configuration = Configuration(host=url)
    configuration.api_key = {"BearerToken": "Bearer bench-token"}
    kube = Kube(ApiClient(configuration), qps=1e9, burst=10**9)
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "pvc-x.0a1b2c3d", "namespace": "bench"},
             "involvedObject": {"kind": "PersistentVolumeClaim", "namespace": "bench", "name": "pvc-x"},
             "type": "Normal", "reason": "ProvisioningSucceeded", "message": "Successfully provisioned volume pvc-x"}
    calls = {"robin: create a volume": lambda: robin.create_volume("rbd", "bench", "pvc-x", 67108864,
                                                                    created_for="k8s-claim:x"),
             "kube: create an Event": lambda: kube.create_event("bench", event)}
    used = {}
    for label, call in calls.items():
        for _ in range(WARMUP):
            call()
        started = time.thread_time()
        for _ in range(requests):
            call()
        used[label] = (time.thread_time() - started) / requests * 1e6
    robin.close()
    kube.close()
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another checkout whose RobinClient is timed in alternation")
    parser.add_argument("--measure", nargs=2, metavar=("CHECKOUT", "URL"), help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.requests)))
        return 0
    listener = socket.create_server(("127.0.0.1", 0))
    server = subprocess.Popen([sys.executable, "-c", "import socket, sys; sys.path.insert(0, sys.argv[1]); "
                               "from benchmarks.robin_client_cpu import serve; "
                               "serve(socket.socket(fileno=int(sys.argv[2])))", str(REPO), str(listener.fileno())],
                              pass_fds=(listener.fileno(),))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    checkouts = {"after": str(REPO)} | ({"before": str(Path(args.before).resolve())} if args.before else {})
    print(f"load {os.getloadavg()[0]:.2f}; client CPU per request, microseconds ({args.requests} requests a round)")
    try:
        for number in range(args.rounds):
            for label, checkout in checkouts.items():
                child = subprocess.run([sys.executable, __file__, "--requests", str(args.requests), "--measure",
                                        checkout, url], capture_output=True, text=True, check=True,
                                       env={**os.environ, "no_proxy": "127.0.0.1"})
                used = ", ".join(f"{call} {value:.1f}" for call, value in json.loads(child.stdout).items())
                print(f"round {number + 1}: {label}: {used} (load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
