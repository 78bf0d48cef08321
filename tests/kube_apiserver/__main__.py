"""python -m tests.kube_apiserver --port N --kubeconfig FILE: serve until interrupted."""
from __future__ import annotations

import argparse
import signal
import threading

from .server import KubeApiServer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kube_apiserver", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--kubeconfig", required=True, help="where to write a kubeconfig for kubectl")
    parser.add_argument("--token", help="bearer token (default: random)")
    parser.add_argument("--history-size", type=int, default=1000, help="watch events kept (default 1000)")
    parser.add_argument("--bookmark-interval", type=float, default=5.0, help="seconds between watch bookmarks")
    parser.add_argument("--page-limit", type=int, default=0, help="most items in a page of a list with a limit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = KubeApiServer(port=args.port, kubeconfig_path=args.kubeconfig, token=args.token,
                           history_size=args.history_size, bookmark_interval=args.bookmark_interval,
                           verbose=args.verbose, page_limit=args.page_limit).start()
    try:
        print(f"kube-apiserver listening on {server.url}; kubeconfig: {server.kubeconfig_path}", flush=True)
        print(f"fault injection: POST {server.url}/_faults/{{fail,clear,drop-watches,compact,short-pages,controllers}} "
              "(bearer token in the kubeconfig)", flush=True)
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
