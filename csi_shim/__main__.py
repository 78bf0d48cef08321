"""python -m csi_shim --endpoint unix:///csi/csi.sock --mode controller|node|all --node-id N"""
from __future__ import annotations

import os

from csi_shim import config, server
from robin import log


def main(argv=None) -> None:
    settings = config.parse(argv)
    log.configure(os.environ.get("ROBIN_LOG_LEVEL", "INFO"))
    server.serve(settings)


if __name__ == "__main__":
    main()
