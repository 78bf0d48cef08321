"""Fixtures for the migration tests: a private GlusterFS server (no Ceph needed)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.gluster import GlusterServer


@pytest.fixture(scope="session")
def gluster() -> GlusterServer:
    # A short base dir under /tmp: glusterd's unix socket lives under it and socket paths are limited.
    base_dir = Path(tempfile.mkdtemp(prefix="rg", dir="/tmp"))
    server = GlusterServer(base_dir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
