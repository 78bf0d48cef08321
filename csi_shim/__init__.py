"""robin's CSI driver `csi.robin.io`: a CSI v1 gRPC plugin over robin's REST API (Identity, Controller) and
over real mounts on the node (Node). Run it with `python -m csi_shim`."""
