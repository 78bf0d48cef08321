"""The provisioner's settings: ROBIN_PROVISIONER_* environment variables, overridden by command-line flags."""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from robin.config import ConfigError, read_env

ENV_PREFIX = "ROBIN_PROVISIONER_"


def _default_identity() -> str:
    # Unique per process, so a restarted replica is a new holder and never mistakes an old lease for its own.
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ProvisionerSettings:
    kubeconfig: str = ""  # empty: in-cluster config, else $KUBECONFIG or ~/.kube/config
    workers: int = 8  # claims and volumes handled at the same time
    qps: float = 50.0  # Kubernetes API requests per second (watches excluded), as client-go's QPS ...
    burst: int = 100  # ... and burst
    # Server-side timeout of a watch; the client gives up on a silent connection a little after it.
    watch_timeout: int = 300
    resync_interval: float = 600.0  # every object is looked at again this often, whatever the watches said
    retry_base: float = 1.0  # first retry delay of a failed claim or volume; doubles up to retry_max
    retry_max: float = 300.0
    leader_elect: bool = True
    lease_name: str = "robin-provisioner"
    lease_namespace: str = field(default_factory=lambda: os.environ.get("POD_NAMESPACE") or "default")
    lease_duration: float = 15.0  # client-go's defaults: a dead leader is replaced within ~15 s
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = field(default_factory=_default_identity)
    metrics_address: str = "127.0.0.1:9808"  # host:port of /metrics; empty turns it off
    # Record the claim's name and namespace in the RBD image's metadata (as ceph-csi's --setmetadata): handy with
    # the rbd CLI, but opening the image for it costs about twice the create, so off unless asked for.
    image_metadata: bool = False
    # The quota of a project the provisioner creates for a namespace, unless the StorageClass gives one.
    default_quota_bytes: int = 100 * 2**30
    default_quota_volumes: int = 100
    default_quota_snapshots: int = 100

    @classmethod
    def from_env(cls, **overrides) -> ProvisionerSettings:
        values = read_env(cls, ENV_PREFIX)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.workers < 1 or self.qps <= 0 or self.burst < 1:
            raise ConfigError("ROBIN_PROVISIONER_WORKERS, _QPS and _BURST must be positive")
        if self.watch_timeout < 1 or self.resync_interval <= 0 or not 0 < self.retry_base <= self.retry_max:
            raise ConfigError("ROBIN_PROVISIONER_WATCH_TIMEOUT, _RESYNC_INTERVAL must be positive and "
                              "0 < _RETRY_BASE <= _RETRY_MAX")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ConfigError("leader election needs 0 < ROBIN_PROVISIONER_RETRY_PERIOD < _RENEW_DEADLINE < "
                              "_LEASE_DURATION")
        if self.metrics_address and ":" not in self.metrics_address:
            raise ConfigError("ROBIN_PROVISIONER_METRICS_ADDRESS must be host:port (or empty)")
        if min(self.default_quota_bytes, self.default_quota_volumes, self.default_quota_snapshots) < 0:
            raise ConfigError("ROBIN_PROVISIONER_DEFAULT_QUOTA_* must be 0 or more")
