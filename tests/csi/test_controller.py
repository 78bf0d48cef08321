"""The CSI Controller service against robin (gunicorn, the session's database) and the real dev cluster: csi-sanity's
controller cases (kubernetes-csi/csi-test pkg/sanity), reproduced, plus robin's own (quotas, concurrency, CephFS).
After each call robin's API and Ceph itself (the RBD image, its snapshots and the trash; the CephFS quota xattr) are
checked, not only the gRPC answer."""
from __future__ import annotations

import threading
from collections import Counter

import grpc
import pytest
import rbd
from prometheus_client.parser import text_string_to_metric_families

from csi_shim.controller import decode_token, encode_token
from csi_shim.errors import CsiError
from csi_shim.ids import robin_name, robin_names
from csi_shim.parameters import new_volume_size
from csi_shim.stubs import pb
from robin.client import COLLECTIONS, VolumeRef
from tests.conftest import cephfs_exists, make_token, unique
from tests.support.csi import block_capability, mount_capability

MiB, GiB, TiB = 2**20, 2**30, 2**40
TIMEOUT_S = 60
Mode = pb.VolumeCapability.AccessMode
RPC = pb.ControllerServiceCapability.RPC
SNW = Mode.SINGLE_NODE_WRITER


# --- fixtures and helpers ---------------------------------------------------------------------------------------

@pytest.fixture
def shim(start_shim):
    """Controller only: these tests need no node service (and no mounts)."""
    return start_shim(mode="controller")


@pytest.fixture
def new_project(robin_api):
    """new_project(max_bytes=..., ...) -> a fresh project's name, made through robin's API."""

    def create(max_bytes=100 * GiB, max_volumes=100, max_snapshots=100) -> str:
        name = unique("csi")
        response = robin_api("POST", "/api/v2/projects", json={"name": name, "quota": {
            "max_bytes": max_bytes, "max_volumes": max_volumes, "max_snapshots": max_snapshots}})
        assert response.status_code == 201, response.text
        return name

    return create


@pytest.fixture
def project(new_project) -> str:
    return new_project()


@pytest.fixture
def rbd_params(project) -> dict:
    return {"project": project}


@pytest.fixture
def cephfs_params(project) -> dict:
    return {"type": "cephfs", "project": project}


class Csi:
    """The controller stub, with helpers that remember what they made; all of it is deleted afterwards through the
    plugin (snapshots, then volumes newest first, so clones go before their parents)."""

    def __init__(self, stub):
        self.stub = stub
        self.volumes: list[str] = []
        self.snapshots: list[str] = []

    def volume_request(self, name, parameters, size=GiB, limit=0, capabilities=None, source=None):
        request = pb.CreateVolumeRequest(name=name, parameters=parameters,
                                         capacity_range=pb.CapacityRange(required_bytes=size, limit_bytes=limit),
                                         volume_capabilities=capabilities or [mount_capability()])
        if source is not None:
            request.volume_content_source.CopyFrom(source)
        return request

    def create_volume(self, name, parameters, **kwargs) -> pb.Volume:
        return self.create_volume_from(self.volume_request(name, parameters, **kwargs))

    def create_volume_from(self, request) -> pb.Volume:
        volume = self.stub.CreateVolume(request, timeout=TIMEOUT_S).volume
        assert volume.volume_id
        self.volumes.append(volume.volume_id)
        return volume

    def create_snapshot(self, name, volume_id) -> pb.Snapshot:
        snapshot = self.stub.CreateSnapshot(pb.CreateSnapshotRequest(name=name, source_volume_id=volume_id),
                                            timeout=TIMEOUT_S).snapshot
        self.snapshots.append(snapshot.snapshot_id)
        return snapshot

    def snapshot_of_new_volume(self, parameters, volume_name=None, snapshot_name=None) -> pb.Snapshot:
        volume = self.create_volume(volume_name or unique("vol"), parameters)
        return self.create_snapshot(snapshot_name or unique("snap"), volume.volume_id)

    def list_volumes(self, **kwargs) -> pb.ListVolumesResponse:
        return self.stub.ListVolumes(pb.ListVolumesRequest(**kwargs), timeout=TIMEOUT_S)

    def list_snapshots(self, **kwargs) -> pb.ListSnapshotsResponse:
        return self.stub.ListSnapshots(pb.ListSnapshotsRequest(**kwargs), timeout=TIMEOUT_S)

    def all_volume_ids(self) -> list[str]:
        """Every volume, page after page (a page without max_entries is robin's largest)."""
        ids, token = [], ""
        while True:
            response = self.list_volumes(starting_token=token)
            ids += [entry.volume.volume_id for entry in response.entries]
            token = response.next_token
            if not token:
                return ids

    def all_snapshot_ids(self) -> list[str]:
        """Every snapshot, page after page (a page without max_entries is robin's largest)."""
        ids, token = [], ""
        while True:
            response = self.list_snapshots(starting_token=token)
            ids += [entry.snapshot.snapshot_id for entry in response.entries]
            token = response.next_token
            if not token:
                return ids

    def cleanup(self) -> None:
        for snapshot_id in reversed(self.snapshots):
            self.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot_id), timeout=TIMEOUT_S)
        for volume_id in reversed(self.volumes):
            self.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume_id), timeout=TIMEOUT_S)


@pytest.fixture
def csi(shim):
    client = Csi(shim.controller)
    yield client
    client.cleanup()


def fails(code: grpc.StatusCode, call, request) -> str:
    """Calls and expects the status `code`; returns its message."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT_S)
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details()


def robin_path(volume_id: str) -> str:
    ref = VolumeRef.parse(volume_id)
    return f"/api/v2/projects/{ref.project}/{COLLECTIONS[ref.kind][0]}/{ref.name}"


def robin_volume(robin_api, volume_id: str) -> dict | None:
    response = robin_api("GET", robin_path(volume_id))
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def robin_snapshot(robin_api, snapshot_id: str) -> dict | None:
    volume_id, _, name = snapshot_id.rpartition("@")
    response = robin_api("GET", f"{robin_path(volume_id)}/snapshots/{name}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def robin_volume_names(robin_api, project: str, kind: str = "rbd") -> list[str]:
    response = robin_api("GET", f"/api/v2/projects/{project}/{COLLECTIONS[kind][0]}", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [volume["name"] for volume in response.json()["items"]]


def image_name(volume_id: str) -> str:
    return VolumeRef.parse(volume_id).name


def rbd_size(ioctx, name: str) -> int:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return image.size()


def rbd_snapshots(ioctx, name: str) -> set[str]:
    """The image's user snapshots (with clone v2, a snapshot clones still use moves to the trash namespace)."""
    with rbd.Image(ioctx, name, read_only=True) as image:
        return {snap["name"] for snap in image.list_snaps() if snap["namespace"] == rbd.RBD_SNAP_NAMESPACE_TYPE_USER}


def rbd_parent(ioctx, name: str) -> str:
    with rbd.Image(ioctx, name, read_only=True) as image:
        return image.get_parent_image_spec()["image_name"]


def rbd_trash(ioctx) -> set[str]:
    return {entry["name"] for entry in rbd.RBD().trash_list(ioctx)}


def snapshot_source(snapshot_id: str) -> pb.VolumeContentSource:
    return pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snapshot_id))


def volume_source(volume_id: str) -> pb.VolumeContentSource:
    return pb.VolumeContentSource(volume=pb.VolumeContentSource.VolumeSource(volume_id=volume_id))


def missing_volume_id(project: str) -> str:
    return f"rbd:{project}:{unique('missing')}"


# --- ControllerGetCapabilities, GetCapacity ---------------------------------------------------------------------

def test_controller_get_capabilities(csi):
    response = csi.stub.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest(), timeout=TIMEOUT_S)
    assert all(capability.HasField("rpc") for capability in response.capabilities)
    assert {capability.rpc.type for capability in response.capabilities} == {
        RPC.CREATE_DELETE_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY, RPC.CREATE_DELETE_SNAPSHOT, RPC.LIST_SNAPSHOTS,
        RPC.CLONE_VOLUME, RPC.EXPAND_VOLUME}


def test_get_capacity_without_parameters(csi):
    response = csi.stub.GetCapacity(pb.GetCapacityRequest(), timeout=TIMEOUT_S)
    assert response.available_capacity >= 0


def test_get_capacity_is_what_the_projects_quota_has_left(csi, new_project, robin_api):
    project = new_project(max_bytes=10 * GiB)
    capacity = lambda parameters, caps=(): csi.stub.GetCapacity(  # noqa: E731
        pb.GetCapacityRequest(parameters=parameters, volume_capabilities=list(caps)),
        timeout=TIMEOUT_S).available_capacity
    assert capacity({"project": project}) == 10 * GiB
    csi.create_volume(unique("vol"), {"project": project}, size=3 * GiB)
    assert capacity({"project": project}) == 7 * GiB
    assert robin_api("GET", f"/api/v2/projects/{project}/usage").json()["remaining_bytes"] == 7 * GiB
    # A project the shim would make on first use: its whole quota, the class's or the default.
    absent = unique("csi")
    assert capacity({"project": absent}) == 100 * GiB
    assert capacity({"project": absent, "projectQuotaBytes": "5Gi"}) == 5 * GiB
    assert robin_api("GET", f"/api/v2/projects/{absent}").status_code == 404  # asking made nothing
    # No CephFS block volume can ever be made.
    assert capacity({"project": project, "type": "cephfs"}, [block_capability()]) == 0
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.GetCapacity,
          pb.GetCapacityRequest(parameters={"project": project, "colour": "blue"}))


def test_get_capacity_is_zero_when_no_volume_is_left(csi, new_project):
    project = new_project(max_volumes=1)
    csi.create_volume(unique("vol"), {"project": project})
    response = csi.stub.GetCapacity(pb.GetCapacityRequest(parameters={"project": project}), timeout=TIMEOUT_S)
    assert response.available_capacity == 0


# --- ListVolumes ------------------------------------------------------------------------------------------------

def test_list_volumes_returns_every_volume_of_robin(csi, rbd_params, cephfs_params, project, robin_api):
    rbd_volume = csi.create_volume(unique("vol"), rbd_params)
    cephfs_volume = csi.create_volume(unique("vol"), cephfs_params)
    entries = csi.list_volumes().entries
    assert not csi.list_volumes().next_token  # fewer than a page: all of them
    assert all(entry.volume.volume_id for entry in entries)
    ids = [entry.volume.volume_id for entry in entries]
    assert len(ids) == len(set(ids))
    assert {rbd_volume.volume_id, cephfs_volume.volume_id} <= set(ids)
    # Exactly robin's live volumes, in every project the token sees.
    projects = robin_api("GET", "/api/v2/projects", params={"limit": 1000}).json()["items"]
    expected = {f"{kind}:{p['name']}:{name}" for p in projects for kind in COLLECTIONS
                for name in robin_volume_names(robin_api, p["name"], kind)}
    assert set(ids) == expected
    listed = {entry.volume.volume_id: entry.volume for entry in entries}
    assert listed[rbd_volume.volume_id].capacity_bytes == GiB
    assert dict(listed[rbd_volume.volume_id].volume_context) == dict(rbd_volume.volume_context)
    assert dict(listed[cephfs_volume.volume_id].volume_context) == dict(cephfs_volume.volume_context)


def test_list_volumes_refuses_an_invalid_starting_token(csi):
    fails(grpc.StatusCode.ABORTED, csi.stub.ListVolumes, pb.ListVolumesRequest(starting_token="invalid-token"))
    # A token of ListSnapshots is no token of ListVolumes.
    for _ in range(2):
        csi.snapshot_of_new_volume({"project": unique("csi")})
    token = csi.list_snapshots(max_entries=1).next_token
    assert token
    fails(grpc.StatusCode.ABORTED, csi.stub.ListVolumes, pb.ListVolumesRequest(starting_token=token))


def test_list_volumes_shows_new_volumes_and_not_deleted_ones(csi, rbd_params):
    before = csi.all_volume_ids()
    volume = csi.create_volume("sanity", rbd_params)
    after_create = csi.all_volume_ids()
    assert len(after_create) == len(before) + 1 and volume.volume_id in after_create
    csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=TIMEOUT_S)
    after_delete = csi.all_volume_ids()
    assert len(after_delete) == len(before) and volume.volume_id not in after_delete


@pytest.fixture
def member_csi(start_shim, app, project):
    """The controller of a plugin holding a member token of `project`: it lists that project's volumes only, so
    a test may act on every volume it lists (an admin's plugin lists other tests' too, and refuses to delete
    those it did not make)."""
    client = Csi(start_shim(mode="controller", token=make_token(app, "member", project)).controller)
    yield client
    client.cleanup()


def test_list_volumes_pagination(member_csi, rbd_params):
    csi = member_csi
    for index in range(3):
        csi.create_volume(f"sanity{index}", rbd_params)
    everything = csi.all_volume_ids()
    assert sorted(everything) == sorted(csi.volumes)  # its project's volumes, and no other
    pages, token = [], ""
    while True:
        response = csi.list_volumes(max_entries=2, starting_token=token)
        assert len(response.entries) <= 2
        pages.extend(entry.volume.volume_id for entry in response.entries)
        token = response.next_token
        if not token:
            break
        assert len(response.entries) == 2
    assert pages == everything

    # csi-sanity's (disabled) case: delete what a page listed, add a volume, go on from its token: nothing twice,
    # nothing deleted.
    first = csi.list_volumes(max_entries=2)
    existing = set(everything)
    for entry in first.entries:
        csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=entry.volume.volume_id), timeout=TIMEOUT_S)
        existing.discard(entry.volume.volume_id)
    existing.add(csi.create_volume("new-addition", rbd_params).volume_id)
    rest = [entry.volume.volume_id for entry in csi.list_volumes(starting_token=first.next_token).entries]
    assert len(rest) == len(set(rest)) and set(rest) <= existing
    assert len(rest) <= len(everything) - 2 + 1


# --- CreateVolume -----------------------------------------------------------------------------------------------

def test_create_volume_without_a_name(csi, rbd_params):
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          pb.CreateVolumeRequest(parameters=rbd_params, volume_capabilities=[mount_capability()]))


def test_create_volume_without_capabilities(csi, rbd_params, project, robin_api):
    name = unique("vol")
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          pb.CreateVolumeRequest(name=name, parameters=rbd_params))
    assert name not in robin_volume_names(robin_api, project)


def test_create_volume_single_node_writer_without_capacity(csi, rbd_params, robin_api, rbd_ioctx):
    request = pb.CreateVolumeRequest(name=unique("vol"), parameters=rbd_params,
                                     volume_capabilities=[mount_capability(mode=SNW)])
    volume = csi.create_volume_from(request)
    assert volume.capacity_bytes == GiB  # the default
    assert robin_volume(robin_api, volume.volume_id)["size_bytes"] == GiB
    assert rbd_size(rbd_ioctx, image_name(volume.volume_id)) == GiB


def test_create_volume_with_1_gib(csi, rbd_params, project, robin_api, rbd_ioctx):
    name = unique("vol")
    volume = csi.create_volume(name, rbd_params, size=GiB)
    assert volume.volume_id == f"rbd:{project}:{name}"  # a valid robin name is kept
    assert volume.capacity_bytes == GiB
    assert not volume.HasField("content_source")
    robin = robin_volume(robin_api, volume.volume_id)
    assert robin["size_bytes"] == GiB and robin["state"] == "available" and robin["pool"] == "rbd"
    assert rbd_size(rbd_ioctx, name) == GiB
    cluster = robin_api("GET", f"/api/v2/clusters/{robin['cluster']}").json()
    assert dict(volume.volume_context) == {
        "type": "rbd", "project": project, "cluster": robin["cluster"], "clusterID": cluster["fsid"],
        "monitors": ",".join(cluster["monitors"]), "pool": "rbd", "imageName": name}


def test_create_volume_rounds_up_to_whole_mib(csi, rbd_params, robin_api, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params, size=GiB + 1)
    assert volume.capacity_bytes == GiB + MiB
    assert robin_volume(robin_api, volume.volume_id)["size_bytes"] == GiB + MiB
    assert rbd_size(rbd_ioctx, image_name(volume.volume_id)) == GiB + MiB


def test_create_volume_twice_with_the_same_capacity(csi, rbd_params, project, robin_api):
    name = unique("vol")
    first = csi.create_volume(name, rbd_params)
    second = csi.create_volume(name, rbd_params)
    assert first.volume_id == second.volume_id and second.capacity_bytes == GiB
    assert dict(first.volume_context) == dict(second.volume_context)
    assert robin_volume_names(robin_api, project) == [name]


def test_create_volume_twice_with_a_different_capacity(csi, rbd_params, project, robin_api, rbd_ioctx):
    name = unique("vol")
    first = csi.create_volume(name, rbd_params, size=GiB, limit=GiB)
    assert first.capacity_bytes == GiB
    fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateVolume,
          csi.volume_request(name, rbd_params, size=2 * GiB, limit=2 * GiB))
    assert robin_volume_names(robin_api, project) == [name]
    assert rbd_size(rbd_ioctx, name) == GiB
    # Other parameters than the volume has are a different volume too.
    fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateVolume,
          csi.volume_request(name, {**rbd_params, "cluster": "elsewhere"}))


def test_create_volume_whose_name_robin_has_elsewhere(csi, rbd_params, project, new_project, robin_api, rbd_ioctx):
    """RBD names are unique per pool across projects, and robin never takes over an image it did not make."""
    name = unique("vol")
    other_project = new_project()
    response = robin_api("POST", f"/api/v2/projects/{other_project}/rbd-images", json={"name": name, "size_bytes": GiB})
    assert response.status_code == 201, response.text
    message = fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateVolume, csi.volume_request(name, rbd_params))
    assert "outside project" in message
    foreign = unique("foreign")
    rbd.RBD().create(rbd_ioctx, foreign, GiB)
    try:
        fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateVolume, csi.volume_request(foreign, rbd_params))
        assert rbd_size(rbd_ioctx, foreign) == GiB
    finally:
        rbd.RBD().remove(rbd_ioctx, foreign)
    assert robin_volume_names(robin_api, project) == []
    assert robin_api("DELETE", f"/api/v2/projects/{other_project}/rbd-images/{name}").status_code == 204


def test_create_volume_with_a_maximum_length_name(csi, rbd_params, project, robin_api, rbd_ioctx):
    name = unique("sanity-controller-create-maxlen")
    name += "a" * (128 - len(name))
    first = csi.create_volume(name, rbd_params)
    assert first.capacity_bytes == GiB
    assert len(first.volume_id.encode()) <= 128  # the spec's limit for an id
    hashed = image_name(first.volume_id)
    assert hashed.startswith("csi-")
    assert robin_volume_names(robin_api, project) == [hashed]
    assert rbd_size(rbd_ioctx, hashed) == GiB
    assert csi.create_volume(name, rbd_params).volume_id == first.volume_id  # the same name, the same volume
    assert robin_volume_names(robin_api, project) == [hashed]


def test_create_volume_names_robin_cannot_take(csi, rbd_params, robin_api):
    for name in ("pvc with spaces", "ünïcode", "robin-clone-1234", "-leading-dash"):
        first = csi.create_volume(name, rbd_params)
        assert image_name(first.volume_id).startswith("csi-")
        assert robin_volume(robin_api, first.volume_id)["state"] == "available"
        assert csi.create_volume(name, rbd_params).volume_id == first.volume_id


def test_create_volume_from_a_snapshot(csi, rbd_params, project, robin_api, rbd_ioctx):
    snapshot = csi.snapshot_of_new_volume(rbd_params)
    assert snapshot.ready_to_use
    name = unique("from-snap")
    request = csi.volume_request(name, rbd_params, size=2 * GiB, source=snapshot_source(snapshot.snapshot_id))
    volume = csi.create_volume_from(request)
    assert volume.content_source.snapshot.snapshot_id == snapshot.snapshot_id
    assert volume.capacity_bytes == 2 * GiB  # larger than its source: robin grows the clone
    source_name, _, snap_name = image_name(snapshot.snapshot_id).partition("@")
    robin = robin_volume(robin_api, volume.volume_id)
    assert robin["parent"] == {"image": image_name(snapshot.source_volume_id), "snapshot": snap_name}
    assert rbd_parent(rbd_ioctx, name) == source_name and rbd_size(rbd_ioctx, name) == 2 * GiB
    # Idempotent; another source under the same name is another volume.
    assert csi.create_volume_from(request).volume_id == volume.volume_id
    fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateVolume, csi.volume_request(name, rbd_params, size=2 * GiB))
    # A listed clone says where it came from.
    listed = {e.volume.volume_id: e.volume for e in csi.list_volumes().entries}[volume.volume_id]
    assert listed.content_source.snapshot.snapshot_id == snapshot.snapshot_id


def test_create_volume_from_a_snapshot_takes_at_least_its_size(csi, rbd_params, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params, size=2 * GiB)
    snapshot = csi.create_snapshot(unique("snap"), volume.volume_id)
    assert snapshot.size_bytes == 2 * GiB
    source = snapshot_source(snapshot.snapshot_id)
    clone = csi.create_volume(unique("clone"), rbd_params, size=0, source=source)
    assert clone.capacity_bytes == 2 * GiB and rbd_size(rbd_ioctx, image_name(clone.volume_id)) == 2 * GiB
    fails(grpc.StatusCode.OUT_OF_RANGE, csi.stub.CreateVolume,
          csi.volume_request(unique("clone"), rbd_params, size=GiB, limit=GiB, source=source))


def test_create_volume_from_a_missing_snapshot(csi, rbd_params, project, robin_api):
    volume = csi.create_volume(unique("vol"), rbd_params)
    for snapshot_id in ("non-existing-snapshot-id", f"{volume.volume_id}@missing",
                        f"{missing_volume_id(project)}@missing"):
        name = unique("from-snap")
        fails(grpc.StatusCode.NOT_FOUND, csi.stub.CreateVolume,
              csi.volume_request(name, rbd_params, source=snapshot_source(snapshot_id)))
        assert name not in robin_volume_names(robin_api, project)


def test_create_volume_from_a_volume(csi, rbd_params, project, robin_api, rbd_ioctx):
    source = csi.create_volume(unique("source"), rbd_params)
    name = unique("from-vol")
    volume = csi.create_volume(name, rbd_params, source=volume_source(source.volume_id))
    assert volume.content_source.volume.volume_id == source.volume_id
    assert volume.capacity_bytes == GiB
    assert robin_volume(robin_api, volume.volume_id)["parent"]["image"] == image_name(source.volume_id)
    assert rbd_parent(rbd_ioctx, name) == image_name(source.volume_id)
    assert rbd_snapshots(rbd_ioctx, image_name(source.volume_id)) == set()  # robin's temporary snapshot is gone
    assert csi.create_volume(name, rbd_params, source=volume_source(source.volume_id)).volume_id == volume.volume_id


def test_create_volume_from_a_missing_volume(csi, rbd_params, project, robin_api):
    for volume_id in ("fake-vol-id-0123456789", missing_volume_id(project)):
        name = unique("from-vol")
        fails(grpc.StatusCode.NOT_FOUND, csi.stub.CreateVolume,
              csi.volume_request(name, rbd_params, source=volume_source(volume_id)))
        assert name not in robin_volume_names(robin_api, project)


def test_create_volume_from_cephfs_or_across_projects_is_refused(csi, rbd_params, cephfs_params, new_project):
    cephfs_volume = csi.create_volume(unique("fs"), cephfs_params)
    cephfs_snapshot = csi.create_snapshot(unique("snap"), cephfs_volume.volume_id)
    for source in (volume_source(cephfs_volume.volume_id), snapshot_source(cephfs_snapshot.snapshot_id)):
        for parameters in (rbd_params, cephfs_params):
            fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
                  csi.volume_request(unique("clone"), parameters, source=source))
    rbd_volume = csi.create_volume(unique("vol"), rbd_params)
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          csi.volume_request(unique("clone"), {"project": new_project()}, source=volume_source(rbd_volume.volume_id)))


def test_how_nodes_mount_a_cephfs_volume_is_in_its_volume_context(csi, cephfs_params, rbd_params, project,
                                                                   robin_api):
    mount = {"mounter": "fuse", "kernelMountOptions": "ms_mode=secure", "fuseMountOptions": "noatime"}
    volume = csi.create_volume(unique("fs"), {**cephfs_params, **mount})
    assert {k: volume.volume_context[k] for k in mount} == mount
    name = unique("fs")
    message = fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
                    csi.volume_request(name, {**cephfs_params, "mounter": "nfs"}))
    assert "mounter must be kernel or fuse" in message
    message = fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
                    csi.volume_request(name, {**rbd_params, "mounter": "fuse"}))
    assert "mounter" in message  # an RBD volume's mapper is the node's --mounter
    assert name not in robin_volume_names(robin_api, project, "cephfs")
    assert name not in robin_volume_names(robin_api, project)


def test_create_volume_with_an_unknown_parameter(csi, rbd_params, project, robin_api):
    name = unique("vol")
    message = fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
                    csi.volume_request(name, {**rbd_params, "colour": "blue", "fs": "cephfs"}))
    assert "colour" in message and "fs" in message
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          csi.volume_request(name, {**rbd_params, "type": "nfs"}))
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          csi.volume_request(name, {**rbd_params, "projectQuotaBytes": "lots"}))
    assert name not in robin_volume_names(robin_api, project)


def test_create_volume_in_the_claims_namespace_makes_its_project(csi, robin_api, rbd_ioctx):
    namespace = unique("ns")
    parameters = {"csi.storage.k8s.io/pvc/namespace": namespace, "csi.storage.k8s.io/pvc/name": "data",
                  "csi.storage.k8s.io/pv/name": "pvc-1", "projectQuotaBytes": "20Gi", "projectQuotaVolumes": "7",
                  "imageFeatures": "layering,exclusive-lock"}
    volume = csi.create_volume(unique("pvc"), parameters)
    assert VolumeRef.parse(volume.volume_id).project == namespace
    assert robin_api("GET", f"/api/v2/projects/{namespace}").json()["quota"] == {
        "max_bytes": 20 * GiB, "max_volumes": 7, "max_snapshots": 100}
    assert sorted(robin_volume(robin_api, volume.volume_id)["features"]) == ["exclusive-lock", "layering"]
    with rbd.Image(rbd_ioctx, image_name(volume.volume_id), read_only=True) as image:
        assert image.features() == rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
    # The class's project wins over the namespace.
    project = unique("csi")
    volume = csi.create_volume(unique("pvc"), {**parameters, "project": project})
    assert VolumeRef.parse(volume.volume_id).project == project


def test_create_volume_access_modes(csi, rbd_params, cephfs_params, project, robin_api):
    for mode in (Mode.MULTI_NODE_MULTI_WRITER, Mode.MULTI_NODE_SINGLE_WRITER):
        fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
              csi.volume_request(unique("vol"), rbd_params, capabilities=[mount_capability(mode=mode)]))
        csi.create_volume(unique("vol"), rbd_params, capabilities=[block_capability(mode=mode)])
        csi.create_volume(unique("fs"), cephfs_params, capabilities=[mount_capability(mode=mode)])
    csi.create_volume(unique("vol"), rbd_params, capabilities=[mount_capability(mode=Mode.MULTI_NODE_READER_ONLY)])
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          csi.volume_request(unique("fs"), cephfs_params, capabilities=[block_capability()]))
    no_access_type = pb.VolumeCapability(access_mode=Mode(mode=SNW))
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          csi.volume_request(unique("vol"), rbd_params, capabilities=[no_access_type]))
    assert len(robin_volume_names(robin_api, project)) == 3


def test_a_restarted_plugin_finds_what_it_made(csi, shim, rbd_params, project, robin_api):
    """Nothing is kept in the plugin's memory: a retry after a crash finds the same volume and snapshot."""
    name, snapshot_name = unique("vol"), unique("snap")
    volume = csi.create_volume(name, rbd_params)
    snapshot = csi.create_snapshot(snapshot_name, volume.volume_id)
    shim.restart()
    csi.stub = shim.controller
    assert csi.create_volume(name, rbd_params).volume_id == volume.volume_id
    assert csi.create_snapshot(snapshot_name, volume.volume_id) == snapshot
    assert robin_volume_names(robin_api, project) == [name]


# --- robin's own cases: quotas, sizes, concurrency --------------------------------------------------------------

def test_quota_refusal_is_resource_exhausted(csi, new_project, robin_api, rbd_ioctx):
    project = new_project(max_bytes=2 * GiB, max_volumes=2, max_snapshots=1)
    name = unique("vol")
    message = fails(grpc.StatusCode.RESOURCE_EXHAUSTED, csi.stub.CreateVolume,
                    csi.volume_request(name, {"project": project}, size=3 * GiB))
    assert "quota" in message
    assert robin_volume_names(robin_api, project) == [] and name not in rbd.RBD().list(rbd_ioctx)
    volume = csi.create_volume(name, {"project": project}, size=GiB)
    fails(grpc.StatusCode.RESOURCE_EXHAUSTED, csi.stub.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
        volume_id=volume.volume_id, capacity_range=pb.CapacityRange(required_bytes=3 * GiB)))
    assert rbd_size(rbd_ioctx, name) == GiB
    csi.create_snapshot(unique("snap"), volume.volume_id)
    fails(grpc.StatusCode.RESOURCE_EXHAUSTED, csi.stub.CreateSnapshot,
          pb.CreateSnapshotRequest(name=unique("snap"), source_volume_id=volume.volume_id))
    assert len(rbd_snapshots(rbd_ioctx, name)) == 1


def test_unsupported_capacity_is_out_of_range(csi, rbd_params, project, robin_api):
    for capacity in (pb.CapacityRange(required_bytes=2 * GiB, limit_bytes=GiB),  # limit below required
                     pb.CapacityRange(required_bytes=GiB + 1, limit_bytes=GiB + 1),  # whole MiB is above the limit
                     pb.CapacityRange(limit_bytes=1000),  # not even one MiB
                     pb.CapacityRange(required_bytes=65 * TiB)):  # above ROBIN_MAX_VOLUME_BYTES (64 TiB)
        request = csi.volume_request(unique("vol"), rbd_params)
        request.capacity_range.CopyFrom(capacity)
        fails(grpc.StatusCode.OUT_OF_RANGE, csi.stub.CreateVolume, request)
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
          csi.volume_request(unique("vol"), rbd_params, size=-1))
    assert robin_volume_names(robin_api, project) == []
    small = csi.create_volume(unique("vol"), rbd_params, size=0, limit=512 * MiB)
    assert small.capacity_bytes == 512 * MiB  # the default, cut down to the limit


def test_concurrent_creates_of_one_name_make_one_volume(csi, shim, rbd_params, project, robin_api):
    name = unique("vol")
    request = csi.volume_request(name, rbd_params)
    results, barrier = [], threading.Barrier(8)

    def create():
        barrier.wait()
        try:
            results.append(shim.controller.CreateVolume(request, timeout=TIMEOUT_S).volume.volume_id)
        except grpc.RpcError as exc:
            results.append(exc.code())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = {r for r in results if isinstance(r, str)}
    assert set(results) - ids <= {grpc.StatusCode.ABORTED}, results
    assert ids == {f"rbd:{project}:{name}"}
    csi.volumes.extend(ids)
    assert robin_volume_names(robin_api, project) == [name]
    # The CO's retry of an aborted call finds the one volume.
    assert csi.create_volume_from(request).volume_id == f"rbd:{project}:{name}"


def test_claim_takeover_the_plugin_never_adopts_deletes_grows_or_clones_a_volume_it_did_not_make(
        csi, rbd_params, new_project, robin_api, rbd_ioctx):
    """A CSI name or id naming another's volume (here one robin's provisioner made for a finance claim) gets
    nothing of it: robin's record of what the volume was made for is checked before every action."""
    finance, name = new_project(), f"pvc-{unique('uid')}"
    response = robin_api("POST", f"/api/v2/projects/{finance}/rbd-images", json={
        "name": name, "size_bytes": GiB, "created_for": f"k8s-claim:{unique('uid')}"})
    assert response.status_code == 201, response.text
    victim = f"rbd:{finance}:{name}"
    try:
        with rbd.Image(rbd_ioctx, name) as image:
            image.write(b"finance ledger, 2026", 0)
        before = robin_volume(robin_api, victim)

        message = fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateVolume,
                        csi.volume_request(name, {"project": finance}))
        assert "not made by this CSI plugin" in message
        message = fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateVolume,
                        csi.volume_request(unique("copy"), {"project": finance}, source=volume_source(victim)))
        assert "not made by this CSI plugin" in message
        fails(grpc.StatusCode.FAILED_PRECONDITION, csi.stub.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
            volume_id=victim, capacity_range=pb.CapacityRange(required_bytes=2 * GiB)))
        message = fails(grpc.StatusCode.FAILED_PRECONDITION, csi.stub.DeleteVolume,
                        pb.DeleteVolumeRequest(volume_id=victim))
        assert "robin keeps it" in message

        assert robin_volume(robin_api, victim) == before and before["state"] == "available"
        assert robin_volume_names(robin_api, finance) == [name]
        assert name not in rbd_trash(rbd_ioctx) and rbd_size(rbd_ioctx, name) == GiB
        with rbd.Image(rbd_ioctx, name, read_only=True) as image:
            assert image.read(0, 20) == b"finance ledger, 2026"
        # what the plugin makes is recorded as its own, and stays its to delete
        own = csi.create_volume(unique("vol"), rbd_params)
        assert robin_volume(robin_api, own.volume_id)["created_for"] == f"csi:{image_name(own.volume_id)}"
    finally:
        robin_api("DELETE", robin_path(victim))


def test_unrecorded_volume_is_never_adopted_by_name_but_stays_deletable_by_id(
        csi, new_project, robin_api, rbd_ioctx):
    """A volume recorded as made for nothing (made before robin kept the record, or by a person): a CreateVolume
    of its name does not take it over, while the CO, which names it by the id a PV carries, can still grow and
    delete what the plugin made before an upgrade."""
    project, name = new_project(), f"pvc-{unique('uid')}"
    response = robin_api("POST", f"/api/v2/projects/{project}/rbd-images", json={"name": name, "size_bytes": GiB})
    assert response.status_code == 201 and response.json()["created_for"] is None, response.text
    volume_id = f"rbd:{project}:{name}"

    message = fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateVolume,
                    csi.volume_request(name, {"project": project}))
    assert "not made by this CSI plugin" in message
    csi.stub.ControllerExpandVolume(pb.ControllerExpandVolumeRequest(
        volume_id=volume_id, capacity_range=pb.CapacityRange(required_bytes=2 * GiB)), timeout=TIMEOUT_S)
    assert rbd_size(rbd_ioctx, name) == 2 * GiB
    csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume_id), timeout=TIMEOUT_S)
    assert robin_volume(robin_api, volume_id) is None and name in rbd_trash(rbd_ioctx)


# --- DeleteVolume -----------------------------------------------------------------------------------------------

def test_delete_volume_without_an_id(csi):
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.DeleteVolume, pb.DeleteVolumeRequest())


def test_delete_volume_with_an_unknown_id(csi, project):
    for volume_id in ("fake-vol-id", missing_volume_id(project), "rbd:no-such-project-here:x", "cephfs:a:b:c"):
        csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume_id), timeout=TIMEOUT_S)


def test_delete_volume(csi, rbd_params, robin_api, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params)
    name = image_name(volume.volume_id)
    assert name in rbd.RBD().list(rbd_ioctx)
    csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=TIMEOUT_S)
    assert robin_volume(robin_api, volume.volume_id) is None
    assert name not in rbd.RBD().list(rbd_ioctx) and name in rbd_trash(rbd_ioctx)  # robin's trash, restorable
    csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=TIMEOUT_S)  # idempotent


def test_delete_volume_with_snapshots_or_clones_is_refused(csi, rbd_params, robin_api, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params)
    snapshot = csi.create_snapshot(unique("snap"), volume.volume_id)
    message = fails(grpc.StatusCode.FAILED_PRECONDITION, csi.stub.DeleteVolume,
                    pb.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert "snapshot" in message
    assert robin_volume(robin_api, volume.volume_id)["state"] == "available"
    assert image_name(volume.volume_id) in rbd.RBD().list(rbd_ioctx)
    csi.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=TIMEOUT_S)
    clone = csi.create_volume(unique("clone"), rbd_params, source=volume_source(volume.volume_id))
    message = fails(grpc.StatusCode.FAILED_PRECONDITION, csi.stub.DeleteVolume,
                    pb.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert "clone" in message
    csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=clone.volume_id), timeout=TIMEOUT_S)
    csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=TIMEOUT_S)
    assert robin_volume(robin_api, volume.volume_id) is None


# --- ValidateVolumeCapabilities ---------------------------------------------------------------------------------

def test_validate_volume_capabilities_without_id_or_capabilities(csi, rbd_params):
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.ValidateVolumeCapabilities,
          pb.ValidateVolumeCapabilitiesRequest(volume_capabilities=[mount_capability()]))
    volume = csi.create_volume(unique("vol"), rbd_params)
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.ValidateVolumeCapabilities,
          pb.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id))


def test_validate_volume_capabilities(csi, rbd_params, cephfs_params):
    volume = csi.create_volume(unique("vol"), rbd_params)
    validate = lambda capabilities, **kwargs: csi.stub.ValidateVolumeCapabilities(  # noqa: E731
        pb.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id, volume_capabilities=capabilities, **kwargs),
        timeout=TIMEOUT_S)
    response = validate([mount_capability(mode=SNW)])
    assert list(response.confirmed.volume_capabilities) == [mount_capability(mode=SNW)]
    response = validate([mount_capability(), block_capability(mode=Mode.MULTI_NODE_MULTI_WRITER)],
                        volume_context=volume.volume_context, parameters=rbd_params)
    assert response.HasField("confirmed")
    assert dict(response.confirmed.volume_context) == dict(volume.volume_context)
    assert dict(response.confirmed.parameters) == rbd_params
    response = validate([mount_capability(mode=Mode.MULTI_NODE_MULTI_WRITER)])
    assert not response.HasField("confirmed") and response.message
    response = validate([mount_capability()], parameters={**rbd_params, "type": "cephfs"})
    assert not response.HasField("confirmed") and "cephfs" in response.message
    response = validate([mount_capability()], volume_context={**volume.volume_context, "imageName": "other"})
    assert not response.HasField("confirmed") and "imageName" in response.message
    cephfs_volume = csi.create_volume(unique("fs"), cephfs_params)
    response = csi.stub.ValidateVolumeCapabilities(pb.ValidateVolumeCapabilitiesRequest(
        volume_id=cephfs_volume.volume_id, volume_capabilities=[block_capability()]), timeout=TIMEOUT_S)
    assert not response.HasField("confirmed") and "block" in response.message


def test_validate_volume_capabilities_of_a_missing_volume(csi, project):
    for volume_id in ("fake-vol-id-0123456789", missing_volume_id(project)):
        fails(grpc.StatusCode.NOT_FOUND, csi.stub.ValidateVolumeCapabilities, pb.ValidateVolumeCapabilitiesRequest(
            volume_id=volume_id, volume_capabilities=[mount_capability()]))


# --- ControllerExpandVolume -------------------------------------------------------------------------------------

def test_expand_volume_without_id_or_capacity(csi, rbd_params):
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
        capacity_range=pb.CapacityRange(required_bytes=2 * GiB)))
    volume = csi.create_volume(unique("vol"), rbd_params)
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.ControllerExpandVolume,
          pb.ControllerExpandVolumeRequest(volume_id=volume.volume_id))


def test_expand_volume(csi, rbd_params, project, robin_api, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params)
    name = image_name(volume.volume_id)

    def expand(required, capability=None):
        request = pb.ControllerExpandVolumeRequest(volume_id=volume.volume_id,
                                                   capacity_range=pb.CapacityRange(required_bytes=required))
        if capability is not None:
            request.volume_capability.CopyFrom(capability)
        return csi.stub.ControllerExpandVolume(request, timeout=TIMEOUT_S)

    response = expand(2 * GiB, mount_capability())
    assert response.capacity_bytes == 2 * GiB and response.node_expansion_required  # the file system grows on the node
    assert robin_volume(robin_api, volume.volume_id)["size_bytes"] == 2 * GiB and rbd_size(rbd_ioctx, name) == 2 * GiB
    response = expand(GiB)  # never shrinks
    assert response.capacity_bytes == 2 * GiB and rbd_size(rbd_ioctx, name) == 2 * GiB
    response = expand(3 * GiB - 1, block_capability())  # a raw block device is done here
    assert response.capacity_bytes == 3 * GiB and not response.node_expansion_required
    assert rbd_size(rbd_ioctx, name) == 3 * GiB
    fails(grpc.StatusCode.OUT_OF_RANGE, csi.stub.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
        volume_id=volume.volume_id, capacity_range=pb.CapacityRange(required_bytes=4 * GiB, limit_bytes=GiB)))
    fails(grpc.StatusCode.NOT_FOUND, csi.stub.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
        volume_id=missing_volume_id(project), capacity_range=pb.CapacityRange(required_bytes=GiB)))


# --- CephFS -----------------------------------------------------------------------------------------------------

def test_cephfs_volume_create_expand_delete(csi, cephfs_params, project, robin_api, fs):
    name = unique("fs")
    volume = csi.create_volume(name, cephfs_params, size=GiB, capabilities=[
        mount_capability(fs_type="", mode=Mode.MULTI_NODE_MULTI_WRITER)])
    assert volume.volume_id == f"cephfs:{project}:{name}" and volume.capacity_bytes == GiB
    robin = robin_volume(robin_api, volume.volume_id)
    path = robin["path"]
    assert robin["quota_bytes"] == GiB and path == f"/robin/{project}/{name}"
    assert fs.getxattr(path, "ceph.quota.max_bytes").decode() == str(GiB)
    assert {k: volume.volume_context[k] for k in ("type", "project", "fsName", "path")} == {
        "type": "cephfs", "project": project, "fsName": "cephfs", "path": path}
    assert csi.create_volume(name, cephfs_params).volume_id == volume.volume_id

    response = csi.stub.ControllerExpandVolume(pb.ControllerExpandVolumeRequest(
        volume_id=volume.volume_id, capacity_range=pb.CapacityRange(required_bytes=3 * GiB)), timeout=TIMEOUT_S)
    assert response.capacity_bytes == 3 * GiB and not response.node_expansion_required  # a quota: nothing on the node
    assert fs.getxattr(path, "ceph.quota.max_bytes").decode() == str(3 * GiB)
    assert robin_volume(robin_api, volume.volume_id)["quota_bytes"] == 3 * GiB
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
        volume_id=volume.volume_id, capacity_range=pb.CapacityRange(required_bytes=4 * GiB),
        volume_capability=block_capability()))

    csi.stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=TIMEOUT_S)
    assert robin_volume(robin_api, volume.volume_id) is None and not cephfs_exists(fs, path)
    assert volume.volume_id not in csi.all_volume_ids()


# --- CreateSnapshot ---------------------------------------------------------------------------------------------

def test_create_snapshot_without_name_or_source(csi):
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateSnapshot,
          pb.CreateSnapshotRequest(source_volume_id="testId"))
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.CreateSnapshot, pb.CreateSnapshotRequest(name="name"))


def test_create_snapshot(csi, rbd_params, robin_api, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params)
    name = unique("snap")
    snapshot = csi.create_snapshot(name, volume.volume_id)
    assert snapshot.snapshot_id == f"{volume.volume_id}@{name}"
    assert snapshot.source_volume_id == volume.volume_id
    assert snapshot.ready_to_use and snapshot.size_bytes == GiB and snapshot.creation_time.seconds > 0
    robin = robin_snapshot(robin_api, snapshot.snapshot_id)
    assert robin["state"] == "available" and robin["size_bytes"] == GiB
    assert rbd_snapshots(rbd_ioctx, image_name(volume.volume_id)) == {name}


def test_create_snapshot_twice_with_the_same_source(csi, rbd_params, robin_api, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params)
    name = unique("snap")
    first = csi.create_snapshot(name, volume.volume_id)
    second = csi.create_snapshot(name, volume.volume_id)
    assert first == second
    listed = robin_api("GET", f"{robin_path(volume.volume_id)}/snapshots").json()["items"]
    assert [s["name"] for s in listed] == [name]
    assert rbd_snapshots(rbd_ioctx, image_name(volume.volume_id)) == {name}


def test_create_snapshot_twice_with_a_different_source(csi, rbd_params, cephfs_params, robin_api, rbd_ioctx):
    name = unique("snap")
    csi.snapshot_of_new_volume(rbd_params, snapshot_name=name)
    for parameters in (rbd_params, cephfs_params):
        other = csi.create_volume(unique("vol"), parameters)
        fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateSnapshot,
              pb.CreateSnapshotRequest(name=name, source_volume_id=other.volume_id))
        assert robin_api("GET", f"{robin_path(other.volume_id)}/snapshots").json()["items"] == []
    assert rbd_snapshots(rbd_ioctx, image_name(csi.volumes[1])) == set()


def test_create_snapshot_with_a_maximum_length_name(csi, rbd_params, robin_api, rbd_ioctx):
    volume = csi.create_volume(unique("vol"), rbd_params)
    name = unique("CreateSnapshot-snapshot-maxlen")
    name += "a" * (128 - len(name))
    first = csi.create_snapshot(name, volume.volume_id)
    assert len(first.snapshot_id.encode()) <= 128
    assert csi.create_snapshot(name, volume.volume_id) == first
    hashed = first.snapshot_id.rpartition("@")[2]
    assert hashed.startswith("csi-") and robin_snapshot(robin_api, first.snapshot_id)["state"] == "available"
    assert rbd_snapshots(rbd_ioctx, image_name(volume.volume_id)) == {hashed}


def test_create_snapshot_of_a_missing_volume(csi, project):
    for volume_id in ("fake-vol-id-0123456789", missing_volume_id(project)):
        fails(grpc.StatusCode.NOT_FOUND, csi.stub.CreateSnapshot,
              pb.CreateSnapshotRequest(name=unique("snap"), source_volume_id=volume_id))


def test_create_snapshot_of_a_cephfs_volume(csi, cephfs_params, robin_api, fs):
    volume = csi.create_volume(unique("fs"), cephfs_params)
    snapshot = csi.create_snapshot(unique("snap"), volume.volume_id)
    assert snapshot.ready_to_use and snapshot.size_bytes == GiB
    path = robin_volume(robin_api, volume.volume_id)["path"]
    assert cephfs_exists(fs, f"{path}/.snap/{snapshot.snapshot_id.rpartition('@')[2]}")


# --- DeleteSnapshot ---------------------------------------------------------------------------------------------

def test_delete_snapshot_without_an_id(csi):
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.DeleteSnapshot, pb.DeleteSnapshotRequest())


def test_delete_snapshot_with_an_unknown_id(csi, rbd_params, project):
    volume = csi.create_volume(unique("vol"), rbd_params)
    for snapshot_id in ("reallyfakesnapshotid", f"{volume.volume_id}@missing", f"{missing_volume_id(project)}@x"):
        csi.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot_id), timeout=TIMEOUT_S)


def test_delete_snapshot(csi, rbd_params, robin_api, rbd_ioctx):
    snapshot = csi.snapshot_of_new_volume(rbd_params)
    image = image_name(snapshot.source_volume_id)
    assert len(rbd_snapshots(rbd_ioctx, image)) == 1
    csi.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=TIMEOUT_S)
    assert robin_snapshot(robin_api, snapshot.snapshot_id) is None
    assert rbd_snapshots(rbd_ioctx, image) == set()
    assert snapshot.snapshot_id not in csi.all_snapshot_ids()
    csi.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=TIMEOUT_S)


def test_delete_a_snapshot_a_volume_was_made_from(csi, rbd_params, robin_api, rbd_ioctx):
    snapshot = csi.snapshot_of_new_volume(rbd_params)
    clone = csi.create_volume(unique("clone"), rbd_params, source=snapshot_source(snapshot.snapshot_id))
    csi.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=TIMEOUT_S)
    assert robin_snapshot(robin_api, snapshot.snapshot_id) is None
    assert rbd_parent(rbd_ioctx, image_name(clone.volume_id)) == image_name(snapshot.source_volume_id)


# --- ListSnapshots ----------------------------------------------------------------------------------------------

def test_list_snapshots_values(csi, rbd_params, robin_api):
    snapshot = csi.snapshot_of_new_volume(rbd_params)
    entries = csi.list_snapshots().entries
    for entry in entries:
        assert entry.snapshot.snapshot_id and entry.snapshot.source_volume_id
        assert entry.snapshot.creation_time.seconds > 0 and entry.snapshot.ready_to_use
    listed = {entry.snapshot.snapshot_id: entry.snapshot for entry in entries}
    assert listed[snapshot.snapshot_id] == snapshot
    assert len(listed) == len(entries)


def test_list_snapshots_by_snapshot_id(csi, rbd_params):
    csi.snapshot_of_new_volume(rbd_params)
    target = csi.snapshot_of_new_volume(rbd_params)
    csi.snapshot_of_new_volume(rbd_params)
    entries = csi.list_snapshots(snapshot_id=target.snapshot_id).entries
    assert [entry.snapshot for entry in entries] == [target]
    assert not csi.list_snapshots(snapshot_id=target.snapshot_id, source_volume_id="rbd:x:y").entries


def test_list_snapshots_with_an_unknown_snapshot_id(csi, rbd_params, project):
    volume = csi.create_volume(unique("vol"), rbd_params)
    for snapshot_id in ("none-exist-id", f"{volume.volume_id}@missing", f"{missing_volume_id(project)}@x"):
        assert not csi.list_snapshots(snapshot_id=snapshot_id).entries


def test_list_snapshots_by_source_volume(csi, rbd_params):
    csi.snapshot_of_new_volume(rbd_params)
    target = csi.snapshot_of_new_volume(rbd_params)
    csi.snapshot_of_new_volume(rbd_params)
    second = csi.create_snapshot(unique("snap"), target.source_volume_id)
    entries = csi.list_snapshots(source_volume_id=target.source_volume_id).entries
    assert sorted(entry.snapshot.snapshot_id for entry in entries) == sorted([target.snapshot_id, second.snapshot_id])
    assert all(entry.snapshot.source_volume_id == target.source_volume_id for entry in entries)


def test_list_snapshots_of_an_unknown_source_volume(csi, project):
    for volume_id in ("fake-vol-id-0123456789", missing_volume_id(project)):
        assert not csi.list_snapshots(source_volume_id=volume_id).entries


def test_list_snapshots_shows_new_snapshots_and_not_deleted_ones(csi, rbd_params):
    before = csi.all_snapshot_ids()
    snapshot = csi.snapshot_of_new_volume(rbd_params)
    assert len(csi.all_snapshot_ids()) == len(before) + 1 and snapshot.snapshot_id in csi.all_snapshot_ids()
    csi.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=TIMEOUT_S)
    after = csi.all_snapshot_ids()
    assert len(after) == len(before) and snapshot.snapshot_id not in after


def test_list_snapshots_next_token_when_limited(csi, rbd_params):
    for _ in range(max(0, 5 - len(csi.all_snapshot_ids()))):
        csi.snapshot_of_new_volume(rbd_params)
    total = len(csi.all_snapshot_ids())
    first = csi.list_snapshots(max_entries=2)
    assert len(first.entries) == 2 and first.next_token
    rest = csi.list_snapshots(starting_token=first.next_token)
    assert len(rest.entries) == total - 2 and not rest.next_token
    ids = [e.snapshot.snapshot_id for e in first.entries] + [e.snapshot.snapshot_id for e in rest.entries]
    assert ids == csi.all_snapshot_ids()
    fails(grpc.StatusCode.ABORTED, csi.stub.ListSnapshots, pb.ListSnapshotsRequest(starting_token="invalid-token"))
    # A token of a listing by source volume, or a cursor robin never gave: no token of this listing.
    for token in (encode_token("snapshots", ("web", 0, "data", "snap")), encode_token("all-snapshots", ("bogus",))):
        fails(grpc.StatusCode.ABORTED, csi.stub.ListSnapshots, pb.ListSnapshotsRequest(starting_token=token))
    fails(grpc.StatusCode.INVALID_ARGUMENT, csi.stub.ListSnapshots, pb.ListSnapshotsRequest(max_entries=-1))


# --- costs: requests to robin that do not grow with the project ---------------------------------------------------

def robin_requests(robin_api) -> Counter:
    """Requests robin has answered so far, by (method, route), from its own metrics (every worker's); its
    /metrics scrapes left out."""
    response = robin_api("GET", "/metrics")
    assert response.status_code == 200, response.text
    counts = Counter()
    for family in text_string_to_metric_families(response.text):
        if family.name != "robin_http_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels["route"] != "/metrics":
                counts[sample.labels["method"], sample.labels["route"]] += int(sample.value)
    return counts


def requests_of(robin_api, call, request):
    """(the answer, the requests the plugin sent robin for it by (method, route))."""
    before = robin_requests(robin_api)
    answer = call(request, timeout=TIMEOUT_S)
    return answer, robin_requests(robin_api) - before


@pytest.fixture
def fleet(new_project, robin_api):
    """fleet(n) -> (project, its n RBD image ids, the ids of a snapshot of each), made through robin's API (the
    plugin acts on volumes it did not make when named by id); all of it is removed afterwards."""
    made: list[str] = []

    def make(n: int) -> tuple[str, list[str], list[str]]:
        project = new_project(max_volumes=n + 2, max_snapshots=n + 2)
        volumes, snapshots = [], []
        for index in range(n):
            name = unique("img")  # image names are unique per pool, across projects
            response = robin_api("POST", f"/api/v2/projects/{project}/rbd-images",
                                 json={"name": name, "size_bytes": MiB})
            assert response.status_code == 201, response.text
            volume_id = f"rbd:{project}:{name}"
            made.append(volume_id)
            response = robin_api("POST", f"{robin_path(volume_id)}/snapshots", json={"name": f"snap{index}"})
            assert response.status_code == 201, response.text
            volumes.append(volume_id)
            snapshots.append(f"{volume_id}@snap{index}")
        return project, volumes, snapshots

    yield make
    for volume_id in made:
        robin_api("DELETE", robin_path(volume_id), params={"with_snapshots": "true", "purge": "true"})


def test_get_capacity_costs_one_request_whatever_the_projects_size(csi, fleet, robin_api):
    costs = {}
    for n in (1, 25):
        project, _volumes, _snapshots = fleet(n)
        answer, costs[n] = requests_of(robin_api, csi.stub.GetCapacity,
                                       pb.GetCapacityRequest(parameters={"project": project}))
        assert answer.available_capacity == 100 * GiB - n * MiB
    assert costs[1] == costs[25] == Counter({("GET", "/api/v2/projects/<project>/usage"): 1})


def test_create_snapshot_checks_its_name_in_one_request_whatever_the_projects_size(csi, fleet, robin_api):
    costs = {}
    for n in (1, 25):
        project, volumes, _snapshots = fleet(n)
        name = unique("snap")
        snapshot, costs[n] = requests_of(robin_api, csi.stub.CreateSnapshot,
                                         pb.CreateSnapshotRequest(name=name, source_volume_id=volumes[-1]))
        csi.snapshots.append(snapshot.snapshot.snapshot_id)
        assert snapshot.snapshot.snapshot_id == f"{volumes[-1]}@{name}"
        # The name is taken now: on another volume of the project it is refused, found by the same lookup.
        other = csi.create_volume(unique("vol"), {"project": project})
        fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateSnapshot,
              pb.CreateSnapshotRequest(name=name, source_volume_id=other.volume_id))
    snapshot_route = "/api/v2/projects/<project>/rbd-images/<name>/snapshots"
    assert costs[1] == costs[25] == Counter({("GET", f"{snapshot_route}/<snapshot>"): 1,
                                             ("GET", "/api/v2/snapshots"): 1, ("POST", snapshot_route): 1})


def test_create_snapshot_refuses_a_hashed_name_taken_on_another_volume(csi, rbd_params):
    name = "x" * 128  # too long for an id as it is: robin gets its digest
    taken = csi.snapshot_of_new_volume(rbd_params, snapshot_name=name)
    assert taken.snapshot_id.rpartition("@")[2] == robin_names(name)[1]
    other = csi.create_volume(unique("vol"), rbd_params)
    fails(grpc.StatusCode.ALREADY_EXISTS, csi.stub.CreateSnapshot,
          pb.CreateSnapshotRequest(name=name, source_volume_id=other.volume_id))


def walk_pages_counting_requests(robin_api, list_call, make_request, ids_of, robin_route) -> list[str]:
    """Every id a CSI listing gives 10 at a time, checking that each page costs one request to robin's
    `robin_route` and that a page's token names the same page every time it is used."""
    pages, token, seen_before = [], "", None
    while True:
        response, cost = requests_of(robin_api, list_call, make_request(max_entries=10, starting_token=token))
        assert cost == Counter({("GET", robin_route): 1})
        assert seen_before in (None, response)
        pages.append(ids_of(response))
        token = response.next_token
        if not token:
            break
        assert len(response.entries) == 10
        seen_before = list_call(make_request(max_entries=10, starting_token=token), timeout=TIMEOUT_S)
    assert len(pages[-1]) <= 10
    return [listed_id for page in pages for listed_id in page]


def test_list_snapshots_costs_one_request_a_page(csi, fleet, robin_api):
    _project, _volumes, mine = fleet(25)
    robin_listing = [item["id"] for item in robin_pages(robin_api, "/api/v2/snapshots", state="available")]
    listed = walk_pages_counting_requests(
        robin_api, csi.stub.ListSnapshots, pb.ListSnapshotsRequest,
        lambda response: [entry.snapshot.snapshot_id for entry in response.entries], "/api/v2/snapshots")
    assert len(listed) == len(set(listed)) == len(robin_listing)  # complete, nothing twice
    assert set(mine) <= set(listed)
    assert listed == csi.all_snapshot_ids()


def test_list_volumes_costs_one_request_a_page(csi, fleet, robin_api):
    _project, mine, _snapshots = fleet(25)
    robin_listing = [item["id"] for item in robin_pages(robin_api, "/api/v2/volumes")]
    # Also what fills the plugin's cache of the clusters' monitors (one request a cluster, every few minutes).
    everything = csi.all_volume_ids()
    listed = walk_pages_counting_requests(
        robin_api, csi.stub.ListVolumes, pb.ListVolumesRequest,
        lambda response: [entry.volume.volume_id for entry in response.entries], "/api/v2/volumes")
    assert len(listed) == len(set(listed)) == len(robin_listing)  # complete, nothing twice
    assert set(mine) <= set(listed)
    assert listed == everything


def robin_pages(robin_api, path: str, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = robin_api("GET", path, params={**params, "limit": 1000, "cursor": cursor})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


# --- the pure parts -------------------------------------------------------------------------------------------

def test_robin_names_of_csi_names():
    assert robin_name("pvc-1234", "rbd:web:") == "pvc-1234"
    long_name = "a" * 128
    hashed = robin_name(long_name, "rbd:web:")
    assert hashed.startswith("csi-") and hashed == robin_name(long_name, "rbd:web:")  # the same name, the same one
    assert hashed != robin_name("b" * 128, "rbd:web:")
    assert len(f"cephfs:{'p' * 63}:{hashed}".encode()) <= 128  # an id of the longest project stays in 128 bytes
    for name in ("with space", "slash/name", "robin-clone-x", "_under", "ü"):
        assert robin_name(name, "").startswith("csi-")
        assert robin_names(name) == (robin_name(name, ""),)
    # Whatever the volume's id, a CSI name is one of at most two robin names (what the snapshot-name check asks).
    assert robin_names("pvc-1234") == ("pvc-1234", robin_name("pvc-1234", "x" * 128))
    assert robin_names(long_name) == (long_name, hashed)


def test_new_volume_sizes():
    assert new_volume_size(pb.CapacityRange()) == GiB
    assert new_volume_size(pb.CapacityRange(required_bytes=1)) == MiB
    assert new_volume_size(pb.CapacityRange(limit_bytes=100 * MiB + 5)) == 100 * MiB
    assert new_volume_size(pb.CapacityRange(required_bytes=GiB), source_size=2 * GiB) == 2 * GiB
    assert new_volume_size(pb.CapacityRange(), source_size=2 * GiB) == 2 * GiB
    for capacity, source in ((pb.CapacityRange(required_bytes=2, limit_bytes=1), 0),
                             (pb.CapacityRange(limit_bytes=MiB - 1), 0),
                             (pb.CapacityRange(limit_bytes=GiB), 2 * GiB)):
        with pytest.raises(CsiError) as caught:
            new_volume_size(capacity, source)
        assert caught.value.code == grpc.StatusCode.OUT_OF_RANGE


def test_list_tokens():
    key = ("web", 1, "data", "snap")
    assert decode_token("snapshots", encode_token("snapshots", key)) == key
    assert decode_token("all-snapshots", encode_token("all-snapshots", ("cursor",))) == ("cursor",)
    assert decode_token("all-volumes", encode_token("all-volumes", ("cursor",))) == ("cursor",)
    assert decode_token("all-volumes", "") == ()
    for listing, token in (("all-volumes", encode_token("snapshots", key)), ("all-volumes", "invalid-token"),
                           ("all-volumes", encode_token("all-volumes", (7,))),
                           ("all-volumes", encode_token("all-snapshots", ("cursor",))),
                           ("snapshots", encode_token("snapshots", ("web", 7, "data", "snap"))),
                           ("snapshots", encode_token("snapshots", ("web", True, "data", "snap"))),
                           ("snapshots", "e30"),
                           ("all-snapshots", encode_token("snapshots", key)),
                           ("all-snapshots", encode_token("all-snapshots", (7,)))):
        with pytest.raises(CsiError) as caught:
            decode_token(listing, token)
        assert caught.value.code == grpc.StatusCode.ABORTED
