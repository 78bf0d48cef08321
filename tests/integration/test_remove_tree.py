"""Removing a CephFS path's tree while something else removes entries of it: done means gone."""
from __future__ import annotations

import threading

import cephfs
import pytest
from sqlalchemy import select

from robin.volumes.models import CephfsPath, VolumeState
from tests.conftest import cephfs_exists as exists
from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB = 2**20
FILES = 1500


def test_remove_tree_racing_another_remover_leaves_nothing_behind(admin, new_project, fs, db_rows):
    """An entry that vanished under robin's walk (here: another client unlinking the files, last
    first) is gone, as wanted; it is not taken for the whole tree being gone."""
    project = new_project()
    url = f"/api/v2/projects/{project}/cephfs-paths"
    body = admin.post(url, json={"name": unique("fs"), "quota_bytes": 256 * MiB}).json
    files = [f"{body['path']}/data/f{i:05d}" for i in range(FILES)]
    fs.mkdir(f"{body['path']}/data", 0o755)
    for file in files:
        fs.close(fs.open(file, "w", 0o644))
    start = threading.Barrier(2)

    def unlink_from_the_end():
        start.wait()
        for file in reversed(files):
            try:
                fs.unlink(file)
            except cephfs.ObjectNotFound:
                pass  # robin's walk got there first

    racer = threading.Thread(target=unlink_from_the_end)
    racer.start()
    try:
        start.wait()
        response = admin.delete(f"{url}/{body['name']}", query_string={"purge": "true"})
    finally:
        racer.join()
    assert response.status_code == 204, response.json
    assert not exists(fs, body["path"])
    [row] = db_rows(select(CephfsPath).where(CephfsPath.id == body["id"]))
    assert row.state is VolumeState.DELETED and row.purged_at is not None
