"""A small, faithful-enough Kubernetes API server for tests (no kube-apiserver can be installed here).

Serves discovery, namespaces, PVCs, PVs, Events, StorageClasses, Leases, Pods, Endpoints, Secrets and ConfigMaps
(JSON, YAML, and the protobuf kubectl's typed commands send) with resourceVersions,
optimistic concurrency, finalizers, list/watch (bookmarks, 410 Gone), the PV controller's binding and provisioning
annotations, PVC protection (while a pod uses the claim), PVC resize validation and admission, and fault injection.
Nothing runs pods: their phase is whatever a test writes to the status subresource.
Run it standalone with `python -m tests.kube_apiserver --port N --kubeconfig FILE`.
"""
from .errors import ApiError
from .faults import Faults
from .server import KubeApiServer
from .store import Store

__all__ = ["ApiError", "Faults", "KubeApiServer", "Store"]
