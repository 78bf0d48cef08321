"""robin.ceph.rbd_ops against the real cluster: every mutation is idempotent."""
from __future__ import annotations

import pytest
import rados
import rbd

from robin.ceph import CephAlreadyExists, CephBusy, CephConnection, rbd_ops
from tests.conftest import unique

pytestmark = pytest.mark.integration
MiB = 2**20


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
    rbd_ops.remove_image(conn, "rbd", name)
    rbd_ops.remove_image(conn, "rbd", name)
    assert name not in rbd.RBD().list(rbd_ioctx)
    assert rbd_ops.image_owner(conn, "rbd", name) is None


def test_resize_is_idempotent(conn, rbd_ioctx):
    name = unique("ops")
    rbd_ops.create_image(conn, "rbd", name, 8 * MiB, ["layering"], owner="vol-3", metadata={})
    for _ in range(2):
        rbd_ops.resize_image(conn, "rbd", name, 16 * MiB)
    with rbd.Image(rbd_ioctx, name, read_only=True) as image:
        assert image.size() == 16 * MiB
    rbd_ops.remove_image(conn, "rbd", name)


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
    rbd_ops.trash_purge(conn, "rbd", trash_id, name, "vol-4")


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
    rbd_ops.trash_purge(conn, "rbd", image_id, name, "vol-5")
    assert image_id not in trash_marks(rbd_ioctx)
