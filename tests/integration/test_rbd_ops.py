"""robin.ceph.rbd_ops against the real cluster: every mutation is idempotent."""
from __future__ import annotations

import threading
import time

import pytest
import rados
import rbd

from robin.ceph import CephAlreadyExists, CephBusy, CephConnection, connection, rbd_ops
from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB = 2**20
GiB = 2**30
FEATURES = ["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]


@pytest.fixture(scope="module")
def conn(ceph_conf):
    connection = CephConnection("test", {"conf_path": ceph_conf, "client_id": "admin"}, timeout=5)
    yield connection
    connection.close()


def test_create_is_idempotent_for_the_same_owner_only(conn, rbd_ioctx):
    name = unique("ops")
    rbd_ops.create_image(conn, "rbd", name, 8 * MiB, ["layering"], owner="vol-1", metadata={})
    rbd_ops.create_image(conn, "rbd", name, 8 * MiB, ["layering"], owner="vol-1", metadata={})
    assert rbd_ops.image_owner(conn, "rbd", name) == "vol-1"
    with pytest.raises(CephAlreadyExists):
        rbd_ops.create_image(conn, "rbd", name, 8 * MiB, ["layering"], owner="vol-2", metadata={})
    assert rbd_ops.image_info(conn, "rbd", name) == rbd_ops.ImageInfo(8 * MiB, ("layering",))
    rbd_ops.remove_image(conn, "rbd", name, 8 * MiB)
    rbd_ops.remove_image(conn, "rbd", name, 8 * MiB)
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert rbd_ops.image_owner(conn, "rbd", name) is None


def test_resize_is_idempotent(conn, rbd_ioctx):
    name = unique("ops")
    rbd_ops.create_image(conn, "rbd", name, 8 * MiB, ["layering"], owner="vol-3", metadata={})
    for _ in range(2):
        rbd_ops.resize_image(conn, "rbd", name, 16 * MiB)
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == 16 * MiB
    rbd_ops.remove_image(conn, "rbd", name, 16 * MiB)


def test_users_are_the_other_clients_watches_and_the_exclusive_lock_holder(conn, rbd_ioctx):
    name = unique("ops")
    rbd_ops.create_image(conn, "rbd", name, 8 * MiB, ["layering", "exclusive-lock"], owner="vol-4", metadata={})
    assert rbd_ops.users(conn, "rbd", name) == []
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"in use", 0)  # another client: its watch, and the exclusive lock it takes to write
        found = rbd_ops.users(conn, "rbd", name)
        with pytest.raises(CephBusy):
            rbd_ops.trash_move(conn, "rbd", name, "vol-4", 3600)
    assert [user.split(" ")[0] for user in found] == ["watcher", "lock"], found
    assert rbd_ops.users(conn, "rbd", name) == []
    trash_id = rbd_ops.trash_move(conn, "rbd", name, "vol-4", 3600)
    assert name not in rbd.RBD().list(rbd_ioctx)
    rbd_ops.trash_purge(conn, "rbd", trash_id, name, "vol-4", 8 * MiB)


def trash_marks(ioctx) -> dict[str, str]:
    """robin's trash marks in its directory object: trash id -> volume id."""
    with rados.ReadOpCtx() as op:
        values, _ = ioctx.get_omap_vals(op, "", "trash/", 1000)
        ioctx.operate_read_op(op, rbd_ops.DIRECTORY_OBJECT)
        return {key.removeprefix("trash/"): value.decode() for key, value in values}


def test_a_trash_move_marks_what_it_moves_and_a_refused_one_leaves_no_mark(conn, rbd_ioctx):
    name = unique("ops")
    rbd_ops.create_image(conn, "rbd", name, 8 * MiB, ["layering", "exclusive-lock"], owner="vol-5", metadata={})
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        image_id = image.id()
    with rbd.Image(rbd_ioctx, name):  # another client's watch
        with pytest.raises(CephBusy):
            rbd_ops.trash_move(conn, "rbd", name, "vol-5", 3600)
    assert image_id not in trash_marks(rbd_ioctx) and name in rbd.RBD().list(rbd_ioctx)
    assert rbd_ops.trash_move(conn, "rbd", name, "vol-5", 3600) == image_id
    assert trash_marks(rbd_ioctx)[image_id] == "vol-5"
    # A rerun finds the image it moved by that mark.
    assert rbd_ops.trash_move(conn, "rbd", name, "vol-5", 3600) == image_id
    rbd_ops.trash_purge(conn, "rbd", image_id, name, "vol-5", 8 * MiB)
    assert image_id not in trash_marks(rbd_ioctx)


# --- progress reports: a long removal keeps its deadline away, a short one costs no Python per object ---------

SHORT_TIMEOUT_S = 2.0
# A removal of more objects than this may outlast the short timeout at rbd_ops' slowest assumed rate: it reports.
BIG = GiB  # 256 objects of 4 MiB, above the 200 the short timeout allows without reports
REPORT_DELAY_S = 0.015  # x 256 reports, one at a time: the removal lasts 3.8 s at least, past the 2 s timeout


@pytest.fixture()
def short_conn(ceph_conf):
    connection_ = CephConnection("test-short", {"conf_path": ceph_conf, "client_id": "admin"},
                                 timeout=SHORT_TIMEOUT_S)
    yield connection_
    connection_.close()


class SlowReports:
    """rbd_ops' progress reporter, counted, each report holding librbd up a while, one at a time: a removal that
    reports every object then lasts longer than the reports' delays add up to, whatever librbd's threads do."""

    def __init__(self, monkeypatch):
        self.reporters = self.reports = 0
        self._lock = threading.Lock()
        monkeypatch.setattr(rbd_ops, "progress_reporter", self.reporter)

    def reporter(self):
        self.reporters += 1
        report = connection.progress_reporter()  # on the call's thread, as rbd_ops takes it

        def slowly() -> None:
            with self._lock:
                self.reports += 1
                report()
                time.sleep(REPORT_DELAY_S)

        return slowly


def remove(conn: CephConnection, name: str, size_bytes: int) -> None:
    rbd_ops.remove_image(conn, "rbd", name, size_bytes)


def purge(conn: CephConnection, name: str, size_bytes: int) -> None:
    trash_id = rbd_ops.trash_move(conn, "rbd", name, "vol-big", 3600)
    rbd_ops.trash_purge(conn, "rbd", trash_id, name, "vol-big", size_bytes)


@pytest.mark.parametrize("removal", [remove, purge], ids=["remove", "trash purge"])
def test_a_removal_that_may_outlast_the_timeout_reports_each_object_and_keeps_its_deadline_away(
        short_conn, rbd_ioctx, monkeypatch, removal):
    name = unique("big")
    rbd_ops.create_image(short_conn, "rbd", name, BIG, FEATURES, owner="vol-big", metadata={})
    slow = SlowReports(monkeypatch)
    try:
        removal(short_conn, name, BIG)  # lasts over 3.8 s against a 2 s timeout, advancing all along
    finally:
        monkeypatch.undo()
        rbd_ops.remove_image(short_conn, "rbd", name, 8 * MiB)  # gone already, unless the test failed
    assert slow.reporters == 1 and slow.reports >= BIG // rbd_ops.OBJECT_BYTES
    assert slow.reports * REPORT_DELAY_S > SHORT_TIMEOUT_S
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert name not in [entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)]
    assert rbd_ops.image_owner(short_conn, "rbd", name) is None


@pytest.mark.parametrize("removal", [remove, purge], ids=["remove", "trash purge"])
def test_a_removal_that_cannot_outlast_the_timeout_gives_librbd_no_python_to_call(short_conn, rbd_ioctx,
                                                                                  monkeypatch, removal):
    name, size = unique("small"), 64 * MiB
    rbd_ops.create_image(short_conn, "rbd", name, size, FEATURES, owner="vol-big", metadata={})
    with rbd.Image(rbd_ioctx, name) as image:
        image.write(b"\1" * MiB, 0)  # objects that exist: the removal has real work to do
    slow = SlowReports(monkeypatch)
    removal(short_conn, name, size)
    assert (slow.reporters, slow.reports) == (0, 0)
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert name not in [entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)]
