"""Used bytes read from RBD object maps without opening the images (robin.ceph.object_map) equal librbd's own
whole-image diff (rbd_ops.measure_image, what a refresh did before) and `rbd du`, on images written at known
offsets; the images whose maps do not answer alone are left to the diff, and a refresh opens only those."""
from __future__ import annotations

import json
import subprocess

import pytest
import rbd

from robin.audit import usage
from robin.ceph import CephConnection, CephNotFound, object_map, rbd_ops
from tests.conftest import unique
from tests.support.ceph_calls import ceph_calls

pytestmark = pytest.mark.integration
KiB, MiB = 2**10, 2**20
MAPS = rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
FAST_DIFF_FEATURES = rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | MAPS


@pytest.fixture(scope="module")
def conn(ceph_conf):
    connection = CephConnection("test", {"conf_path": ceph_conf, "client_id": "admin"}, timeout=30)
    yield connection
    connection.close()


@pytest.fixture()
def make_image(rbd_ioctx):
    made = []

    def make(size: int, extents=(), features: int = FAST_DIFF_FEATURES, order: int | None = None) -> str:
        name = unique("map")
        rbd.RBD().create(rbd_ioctx, name, size, old_format=False, features=features, order=order)
        made.append(name)
        with rbd.Image(rbd_ioctx, name) as image:
            for offset, length in extents:
                image.write(b"u" * length, offset)
        return name

    yield make
    for name in reversed(made):  # clones first
        with rbd.Image(rbd_ioctx, name) as image:
            for snap in image.list_snaps():
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
        rbd.RBD().remove(rbd_ioctx, name)


def rbd_du(ceph_conf: str, name: str) -> int:
    """The head's used size as `rbd du` reports it."""
    out = subprocess.run(["rbd", "-c", ceph_conf, "du", "--format", "json", f"rbd/{name}"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    [head] = [entry for entry in json.loads(out)["images"] if "snapshot" not in entry]
    return head["used_size"]


def from_maps(conn, *names: str) -> tuple[dict[str, rbd_ops.Measured], list[str]]:
    calls, opens = ceph_calls("rbd.du_map"), ceph_calls("rbd.du")
    found = object_map.measure_images(conn, "rbd", names)
    assert ceph_calls("rbd.du_map") == calls + 1 and ceph_calls("rbd.du") == opens  # one call, no image opened
    return found


def test_the_map_gives_what_librbd_and_rbd_du_give(conn, make_image, ceph_conf):
    images = {
        # objects 0, 2 and 3 (4 MiB objects), the first partly written
        make_image(64 * MiB, [(0, KiB), (8 * MiB, MiB), (13 * MiB, 2 * MiB)]): 3 * 4 * MiB,
        # the last object is short: the image ends 5 bytes into it
        make_image(8 * MiB + 5, [(0, 1), (8 * MiB, 5)]): 4 * MiB + 5,
        # 1 MiB objects, 37 of them written: a map of several bytes, not a multiple of 4 objects
        make_image(256 * MiB, [(n * MiB, 512) for n in range(0, 74, 2)], order=20): 37 * MiB,
        make_image(32 * MiB): 0,
    }
    # 3 TiB of 4 MiB objects: a map of 196,608 bytes, its CRCs over 48 blocks; the first and a late object
    big = make_image(3 * 2**40, [(0, 1), (3 * 2**40 - 4 * MiB, 1)])
    images[big] = 8 * MiB
    found, left = from_maps(conn, *images)
    assert left == []
    for name, used in images.items():
        assert found[name] == rbd_ops.Measured(used, rbd_ops.FAST_DIFF)
        assert rbd_ops.measure_image(conn, "rbd", name) == found[name]
        if name != big:  # rbd du of a 3 TiB image asks every object of the head: too slow here
            assert rbd_du(ceph_conf, name) == used


def test_images_the_map_does_not_measure_alone_are_left_to_the_diff(conn, make_image, rbd_ioctx, ceph_conf):
    extents = [(0, MiB), (12 * MiB, MiB)]
    plain = make_image(64 * MiB, extents, features=rbd.RBD_FEATURE_LAYERING)  # no object map
    invalid = make_image(64 * MiB, extents)
    with rbd.Image(rbd_ioctx, invalid) as image:
        image.update_features(MAPS, False)
        image.update_features(MAPS, True)  # re-enabled: invalid until rebuilt
        assert image.flags() & rbd.RBD_FLAG_OBJECT_MAP_INVALID
    snapped = make_image(64 * MiB, extents)
    with rbd.Image(rbd_ioctx, snapped) as image:
        image.create_snap("s1")
        image.write(b"after", 20 * MiB)  # a third object, only in the head
        image.protect_snap("s1")
    clone = unique("map")
    rbd.RBD().clone(rbd_ioctx, snapped, "s1", rbd_ioctx, clone, features=FAST_DIFF_FEATURES)
    missing = unique("map")

    try:
        found, left = from_maps(conn, plain, invalid, snapped, clone, missing)
        assert found == {} and left == [plain, invalid, snapped, clone, missing]
        # What the diff gives them instead (and what a refresh stores): as `rbd du` has it, but for the images
        # with snapshots, whose head `rbd du` counts from the last snapshot on.
        assert rbd_ops.measure_image(conn, "rbd", plain) == rbd_ops.Measured(2 * 4 * MiB, rbd_ops.NO_MAP)
        assert rbd_ops.measure_image(conn, "rbd", invalid) == rbd_ops.Measured(2 * 4 * MiB, rbd_ops.FULL_SCAN)
        assert rbd_du(ceph_conf, plain) == rbd_du(ceph_conf, invalid) == 2 * 4 * MiB
        assert rbd_ops.measure_image(conn, "rbd", snapped) == rbd_ops.Measured(3 * 4 * MiB, rbd_ops.FAST_DIFF)
        assert rbd_ops.measure_image(conn, "rbd", clone).used_bytes == 2 * 4 * MiB  # the parent's, through it
        with pytest.raises(CephNotFound):
            rbd_ops.measure_image(conn, "rbd", missing)

        # Rebuilt, the map answers again; with the snapshot gone, so does the map of the image that had one.
        with rbd.Image(rbd_ioctx, invalid) as image:
            image.rebuild_object_map()
        rbd.RBD().remove(rbd_ioctx, clone)
        with rbd.Image(rbd_ioctx, snapped) as image:
            image.unprotect_snap("s1")
            image.remove_snap("s1")
        found, left = from_maps(conn, invalid, snapped)
        assert left == [] and found == {invalid: rbd_ops.Measured(2 * 4 * MiB, rbd_ops.FAST_DIFF),
                                        snapped: rbd_ops.Measured(3 * 4 * MiB, rbd_ops.FAST_DIFF)}
        assert rbd_du(ceph_conf, snapped) == 3 * 4 * MiB
    finally:
        try:
            rbd.RBD().remove(rbd_ioctx, clone)
        except rbd.ImageNotFound:
            pass


def test_a_damaged_map_is_not_trusted(conn, make_image, rbd_ioctx):
    name = make_image(64 * MiB, [(0, MiB)])
    with rbd.Image(rbd_ioctx, name) as image:
        map_object = f"rbd_object_map.{image.id()}"
    encoded = bytearray(rbd_ioctx.read(map_object, 4096))
    assert object_map.used_bytes_from_map(bytes(encoded), 64 * MiB, 4 * MiB) == 4 * MiB
    damaged = [encoded[:18] + bytes([encoded[18] ^ 0x40]) + encoded[19:],  # an object flipped: its CRC fails
               encoded[:-1],  # cut short
               encoded + b"\0"]  # longer than its footer says
    for bad in damaged:
        assert object_map.used_bytes_from_map(bytes(bad), 64 * MiB, 4 * MiB) is None
    assert object_map.used_bytes_from_map(bytes(encoded), 128 * MiB, 4 * MiB) is None  # another object count
    rbd_ioctx.write_full(map_object, bytes(damaged[0]))
    assert from_maps(conn, name) == ({}, [name])


def test_a_refresh_opens_only_the_images_the_maps_do_not_measure(app, admin, new_project, rbd_ioctx):
    project = new_project(max_bytes=2**40, max_volumes=100)
    made = []
    for _ in range(usage.MAP_CHUNK + 3):
        response = admin.post(f"/api/v2/projects/{project}/rbd-images",
                              json={"name": unique("img"), "size_bytes": 64 * MiB})
        assert response.status_code == 201, response.json
        made.append(response.json)
    with rbd.Image(rbd_ioctx, made[0]["name"]) as image:
        image.write(b"x", 0)
        image.create_snap("kept")  # this one is opened
    maps, opens = ceph_calls("rbd.du_map"), ceph_calls("rbd.du")
    try:
        with app.app_context():
            result = usage.refresh(volume_ids=[volume["id"] for volume in made])
    finally:
        with rbd.Image(rbd_ioctx, made[0]["name"]) as image:
            image.remove_snap("kept")
    assert result.measured == len(made) and result.failed == []
    assert ceph_calls("rbd.du_map") - maps == 2  # a chunk of MAP_CHUNK and one of 3
    assert ceph_calls("rbd.du") - opens == 1
    body = admin.get("/api/v2/audit/usage", query_string={"volumes": "true"}).json
    figures = {row["id"]: (row["used_bytes"], row["method"]) for row in body["volumes"]}
    assert figures[made[0]["id"]] == (4 * MiB, rbd_ops.FAST_DIFF)
    assert all(figures[volume["id"]] == (0, rbd_ops.FAST_DIFF) for volume in made[1:])
