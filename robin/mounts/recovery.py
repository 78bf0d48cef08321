"""Stages whose FUSE daemon died: how they are recognised, and what they are mounted again from.

A FUSE mount lives as long as its daemon. When the daemon is gone (killed with the node plugin's container, OOM,
a crash) the mount stays in the mount table and every access to it fails with ENOTCONN ("transport endpoint is not
connected"), ECONNABORTED once the connection was aborted through fusectl. Only those two mean "the daemon is gone":
EIO, ESTALE or EACCES on a live mount are the cluster's answers and are left to it.

What a stage is mounted again from is its record (`stage.json` in the volume's directory, written at every stage):
the staging path, the volume without its key (the key stays in the 0600 keyring), and the capability it was staged
with. Publish targets are not recorded: they are the mounts of the dead stage's device in /proc/self/mountinfo.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
from dataclasses import dataclass

from robin.mounts.volume import Capability, Volume, VolumeDir

DAEMON_GONE = (errno.ENOTCONN, errno.ECONNABORTED)


def daemon_gone(path: str) -> bool:
    """The FUSE mount at `path` has lost its daemon."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno in DAEMON_GONE
    return False


@dataclass(frozen=True)
class StageRecord:
    staging: str
    volume: Volume
    capability: Capability

    def to_json(self) -> dict:
        volume = {k: v for k, v in dataclasses.asdict(self.volume).items() if k != "key"}
        return {"staging": self.staging, "volume": volume, "capability": dataclasses.asdict(self.capability)}

    @classmethod
    def read(cls, vdir: VolumeDir) -> StageRecord | None:
        """The volume's record with its key from the keyring; None when there is none to read."""
        data = vdir.recorded_stage()
        if data is None:
            return None
        try:
            fields = data["volume"]
            volume = Volume(**{**fields, "monitors": list(fields["monitors"]),
                               "kernel_options": tuple(fields["kernel_options"]),
                               "fuse_options": tuple(fields["fuse_options"]), "key": vdir.key()})
            capability = Capability(**{**data["capability"], "flags": tuple(data["capability"]["flags"])})
            return cls(staging=data["staging"], volume=volume, capability=capability)
        except (KeyError, TypeError, IndexError, OSError):
            return None


def recorded_volume_id(directory: str) -> str | None:
    """The id of the volume whose directory this is, from its stage record."""
    try:
        with open(os.path.join(directory, "stage.json")) as handle:
            return json.load(handle)["volume"]["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
