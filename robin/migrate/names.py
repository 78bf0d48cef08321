"""Names of destination volumes: robin's alphabet and length (robin.schemas.CEPH_NAME), with a hash of the whole
wanted name when it has to be cut, so that two sources never share a destination. The cut never leaves '.', '-'
or '_' before the hash, so a name made from a PV's name is still a valid PV name (it names the new PV too)."""
from __future__ import annotations

import hashlib
import re

LIMIT = 128
HASH_LENGTH = 12
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def volume_name(wanted: str) -> str:
    name = _NOT_IN_NAME.sub("-", wanted).strip("-._") or "volume"
    if len(name) > LIMIT:
        digest = hashlib.sha256(wanted.encode()).hexdigest()[:HASH_LENGTH]
        name = f"{name[:LIMIT - HASH_LENGTH - 1].rstrip('-._')}-{digest}"
    return name
