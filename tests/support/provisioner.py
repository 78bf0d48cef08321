"""`robin provisioner` as a subprocess, stopped (or killed on purpose) by its pid."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from tests.support.net import free_port, wait_until

STOP_TIMEOUT_S = 20

# Short enough for tests to see retries, takeovers and resyncs within seconds.
FAST = {"ROBIN_PROVISIONER_RETRY_BASE": "0.2", "ROBIN_PROVISIONER_RETRY_MAX": "2",
        "ROBIN_PROVISIONER_LEASE_DURATION": "3", "ROBIN_PROVISIONER_RENEW_DEADLINE": "2",
        "ROBIN_PROVISIONER_RETRY_PERIOD": "0.3", "ROBIN_PROVISIONER_WATCH_TIMEOUT": "30"}


class ProvisionerProcess:
    def __init__(self, kubeconfig: str, robin_url: str, token: str, identity: str, extra_env: dict | None = None):
        self.identity = identity
        self.metrics_port = free_port()
        self.log_path = Path(tempfile.mkdtemp(prefix="robin-provisioner-")) / f"{identity}.log"
        env = {**os.environ, "ROBIN_URL": robin_url, "ROBIN_TOKEN": token, "ROBIN_LOG_LEVEL": "INFO", **FAST,
               **(extra_env or {})}
        argv = [sys.executable, "-m", "robin.cli", "provisioner", "--kubeconfig", kubeconfig, "--identity", identity,
                "--metrics-address", f"127.0.0.1:{self.metrics_port}"]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, env=env, stdout=self._log, stderr=self._log, start_new_session=True)

    def wait_serving(self, timeout: float = 60) -> ProvisionerProcess:
        """Until its /metrics answers: it has started (importing the kubernetes client alone takes a second)."""
        def serving() -> bool:
            if not self.alive:
                raise RuntimeError(f"the provisioner exited: {self.log()[-2000:]}")
            try:
                return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(serving, timeout, f"provisioner {self.identity}")
        return self

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease released, as a node failure or an OOM kill."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Its /metrics as {'name{labels}': value}."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples
