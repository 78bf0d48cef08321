"""python -m csi_shim --endpoint unix:///csi/csi.sock --mode controller|node|all --node-id N"""
from __future__ import annotations

from csi_shim import config, server
from robin import log


def main(argv=None) -> None:
    settings = config.parse(argv)
    log.configure(settings.log_level)
    server.serve(settings)


if __name__ == "__main__":
    main()
