"""A Kubernetes API server for tests (no kube-apiserver can be installed here) that behaves like Kubernetes 1.32
where robin depends on it: kinds and media types, OpenAPI schemas, validation, API machinery (resourceVersions,
409s, finalizers, list/watch), the controllers run after the writes (PV binding and reclaim, PVC and PV protection,
namespace deletion, the end of Terminating pods), RBAC for ServiceAccount tokens, and fault injection.

README.md beside this file says what it models and what it does not; tests/k8s/test_kube_apiserver.py checks it
against the Kubernetes API conventions with the real kubectl and the official Python client. Nothing runs pods:
their node and phase are whatever a test writes. Run it standalone with
`python -m tests.kube_apiserver --port N --kubeconfig FILE`.
"""
from .errors import ApiError
from .faults import Faults
from .server import KubeApiServer
from .store import Store

__all__ = ["ApiError", "Faults", "KubeApiServer", "Store"]
