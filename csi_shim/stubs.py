"""The generated protobuf and gRPC modules (made from csi.proto when robin is installed)."""
from __future__ import annotations

try:
    from csi_shim import csi_pb2 as pb
    from csi_shim import csi_pb2_grpc as rpc
except ImportError as exc:  # a checkout used without installing it
    raise ImportError("csi_shim's gRPC stubs are generated at install time: run `make bootstrap` (or "
                      "`pip install -e .`) to make csi_shim/csi_pb2.py") from exc

__all__ = ["pb", "rpc"]
