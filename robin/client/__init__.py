"""robin's clients of its own REST API: `rest` speaks `/api/v2` (used by the Kubernetes provisioner, the CSI shim and
the migration)."""
from robin.client.rest import (
    COLLECTIONS,
    ClientConfig,
    MiB,
    RobinApiError,
    RobinClient,
    VolumeRef,
    ensure_project,
    round_up_to_mib,
    volume_context,
    volume_size,
)

__all__ = ["COLLECTIONS", "ClientConfig", "MiB", "RobinApiError", "RobinClient", "VolumeRef", "ensure_project",
           "round_up_to_mib", "volume_context", "volume_size"]
