"""robin's clients of its own REST API: `rest` speaks `/api/v2` (for the Kubernetes provisioner, the CSI shim and the
migration); `provisioning` holds the steps of making a volume that the provisioner and the CSI controller share."""
from robin.client.provisioning import Provisioned, Provisioning, VolumeTaken, made_for, volume_context
from robin.client.rest import (
    COLLECTIONS,
    ClientConfig,
    MiB,
    RobinApiError,
    RobinClient,
    VolumeRef,
    round_up_to_mib,
    volume_size,
)

__all__ = ["COLLECTIONS", "ClientConfig", "MiB", "Provisioned", "Provisioning", "RobinApiError", "RobinClient",
           "VolumeRef", "VolumeTaken", "made_for", "round_up_to_mib", "volume_context", "volume_size"]
