"""The `/v1` API that the Wayne Kubernetes dashboard's Robin client calls (see the README)."""
from robin.compat.wayne_v1.api import install

__all__ = ["install"]
