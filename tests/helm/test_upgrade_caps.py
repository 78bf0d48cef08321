"""docs/install-kubernetes.md's upgrade of `client.robin`'s caps (its ```sh cephx-upgrade block), run on the dev
cluster against a user made with the caps an earlier robin asked for: afterwards the user has exactly the caps
docs/existing-cluster.md gives a new install (its ```sh cephx-api block, run too) and still has its key, so the
keyring Secret the chart mounts stays valid."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.integration.test_least_privilege import ceph, documented, run_documented

pytestmark = pytest.mark.integration
INSTALL_DOC = Path(__file__).resolve().parents[2] / "docs" / "install-kubernetes.md"
# client.robin as the install page asked for it before robin made a Ceph user per CephFS path: the gateway mounted
# CephFS paths as client.robin, which needed the file system's data pools.
EARLIER_CAPS = {
    "mon": "profile rbd, allow r fsname=cephfs",
    "osd": "profile rbd pool=rbd, allow rw tag cephfs data=cephfs",
    "mds": "allow r fsname=cephfs, allow rwps fsname=cephfs path=/robin",
}


def install_doc_block(tag: str) -> str:
    found = re.findall(rf"^```sh {re.escape(tag)}\n(.*?)^```", INSTALL_DOC.read_text(), re.M | re.S)
    assert len(found) == 1, f"{INSTALL_DOC} has {len(found)} blocks tagged {tag}"
    return found[0]


def as_user(script: str, entity: str) -> str:
    """The script, acting on `entity` instead of client.robin (robin's own users of the session stay as they
    are); the users it makes caps for keep their prefix."""
    renamed = script.replace("client.robin ", f"{entity} ")
    assert renamed.count(entity) == 1, script
    return renamed


def auth(ceph_conf: str, entity: str) -> dict:
    (record,) = json.loads(ceph(ceph_conf, "auth", "get", entity, "--format", "json"))
    return record


def test_the_upgrade_gives_client_robin_a_new_installs_caps_and_keeps_its_key(ceph_conf, tmp_path):
    upgraded, fresh = f"client.{unique('robin-upgraded')}", f"client.{unique('robin-fresh')}"
    try:
        ceph(ceph_conf, "auth", "get-or-create", upgraded, *[v for cap in EARLIER_CAPS.items() for v in cap])
        key = auth(ceph_conf, upgraded)["key"]
        run_documented(as_user(install_doc_block("cephx-upgrade"), upgraded), ceph_conf, str(tmp_path))
        run_documented(as_user(documented("cephx-api"), fresh), ceph_conf, str(tmp_path))

        after = auth(ceph_conf, upgraded)
        assert after["caps"] == auth(ceph_conf, fresh)["caps"]
        assert after["key"] == key
        assert "tag cephfs data" not in after["caps"]["osd"]
        assert "allow command 'fs authorize'" in after["caps"]["mon"]
    finally:
        for entity in (upgraded, fresh):
            subprocess.run(["ceph", "--conf", ceph_conf, "auth", "rm", entity], capture_output=True, timeout=60)
