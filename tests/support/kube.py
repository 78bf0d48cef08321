"""The test Kubernetes API server driven as a person drives a cluster: with the machine's real kubectl."""
from __future__ import annotations

import shutil
import subprocess

import yaml

KUBECTL = shutil.which("kubectl")
KUBECTL_TIMEOUT_S = 90  # longer than the tests' own `kubectl wait --timeout`s


def kubectl(server, *args: str, stdin: str | None = None) -> str:
    """kubectl against `server` (a running tests.kube_apiserver); its stdout, or an assertion with its stderr."""
    result = subprocess.run([KUBECTL, "--kubeconfig", server.kubeconfig_path, *args], input=stdin,
                            capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def create(server, *objects: dict) -> None:
    kubectl(server, "create", "-f", "-", stdin=yaml.safe_dump_all(objects))
