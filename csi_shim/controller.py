"""The Controller service: volumes and snapshots made, listed, grown and deleted through robin's REST API.

Ids and names come from csi_shim.ids, a request's parameters, capabilities and sizes from csi_shim.parameters; a
volume is made through robin.client.provisioning, the steps robin's provisioner takes too. A CSI name maps to one
robin name, so a retried call can only find what its first attempt made: robin answers 409 (name_taken,
snapshot_exists) and the shim compares what exists with what is asked.
Calls for one name or id at a time (robin.mounts.InFlight): a concurrent second one is ABORTED, as the spec allows.
The plugin acts only on volumes it made: robin records each as made for `csi:<robin name>` (created_for), and a
volume of that name made otherwise (for a claim by robin's provisioner, by the Wayne platform, by a migration or
by a person) is never adopted, deleted, grown nor cloned by it.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from csi_shim.config import ShimConfig
from csi_shim.errors import CsiError, csi_service, invalid, not_found
from csi_shim.ids import (
    TEMPORARY_CLONE_SNAPSHOT,
    SnapshotRef,
    csi_owner,
    not_ours,
    parse_volume_id,
    robin_name,
    robin_names,
    volume_ref,
)
from csi_shim.parameters import (
    CSI_PREFIX,
    KINDS,
    Parameters,
    capability_problem,
    capacity_range,
    new_volume_size,
    out_of_range,
    size_refused,
)
from csi_shim.stubs import pb, rpc
from robin.client import (
    Provisioned,
    Provisioning,
    RobinApiError,
    RobinClient,
    VolumeRef,
    VolumeTaken,
    round_up_to_mib,
    volume_size,
)
from robin.mounts import InFlight

log = logging.getLogger("csi_shim")

ROBIN_PAGE = 1000  # robin's largest page
NOT_FOUND_CODES = ("project_not_found", "volume_not_found", "snapshot_not_found")
RPC = pb.ControllerServiceCapability.RPC
CAPABILITIES = (RPC.CREATE_DELETE_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY, RPC.CREATE_DELETE_SNAPSHOT,
                RPC.LIST_SNAPSHOTS, RPC.CLONE_VOLUME, RPC.EXPAND_VOLUME)


def aborted(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.ABORTED, message)


def failed_precondition(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.FAILED_PRECONDITION, message)


# --- list tokens ----------------------------------------------------------------------------------------------

# A token is the key of the last entry returned (keyset, not offset: entries deleted meanwhile shift nothing): a
# volume's snapshot's (project, kind index, volume, name), or for every volume and every snapshot robin's own cursor.
KEY_TYPES = {"all-volumes": (str,), "snapshots": (str, int, str, str), "all-snapshots": (str,)}


def encode_token(listing: str, key: tuple) -> str:
    raw = json.dumps({"list": listing, "after": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(listing: str, token: str) -> tuple:
    if not token:
        return ()
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key = tuple(data["after"]) if data["list"] == listing else None
    except (binascii.Error, ValueError, KeyError, TypeError):
        key = None
    if not _valid_key(listing, key):
        raise _foreign_token(token)
    return key


def _valid_key(listing: str, key: tuple | None) -> bool:
    types = KEY_TYPES[listing]
    if key is None or len(key) != len(types) or not all(type(v) is t for v, t in zip(key, types, strict=True)):
        return False
    return types[1:2] != (int,) or 0 <= key[1] < len(KINDS)  # a kind index, where the key has one


def _foreign_token(token: str) -> CsiError:
    return aborted(f"starting_token {token!r} is not one this plugin returned; list again without it")


def paginate(items: Iterable[tuple[tuple, object]], after: tuple, max_entries: int, listing: str) -> tuple[list, str]:
    """The entries after `after` (keys ascending), at most max_entries of them (0: all), and the next token."""
    if max_entries < 0:
        raise invalid("max_entries cannot be negative")
    page, last = [], None
    for key, entry in items:
        if key <= after:
            continue
        if max_entries and len(page) == max_entries:
            return page, encode_token(listing, last)
        page.append(entry)
        last = key
    return page, ""


def _timestamp(value: str) -> Timestamp:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # robin's times are UTC
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@dataclass(frozen=True)
class CloneSource:
    """A CreateVolume content source, as robin's clone takes it."""

    source: dict  # robin's {"image", "snapshot"?}
    size: int  # the volume's size at the snapshot, or now
    origin: tuple  # ("snapshot", snapshot id) or ("volume", volume id), compared with an existing volume's


def content_source_of(ref: VolumeRef, volume: dict) -> tuple | None:
    """What an RBD clone was made from, as CloneSource.origin (None for a volume that is no clone)."""
    parent = volume.get("parent")
    if not parent:
        return None
    source = VolumeRef("rbd", ref.project, parent["image"])
    if (parent.get("snapshot") or "").startswith(TEMPORARY_CLONE_SNAPSHOT):
        return ("volume", source.handle)
    return ("snapshot", SnapshotRef(source, parent["snapshot"]).id)


def content_source_message(origin: tuple | None) -> pb.VolumeContentSource | None:
    if origin is None:
        return None
    if origin[0] == "snapshot":
        return pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=origin[1]))
    return pb.VolumeContentSource(volume=pb.VolumeContentSource.VolumeSource(volume_id=origin[1]))


def _listed_snapshot_ref(item: dict) -> SnapshotRef:
    """The ref of a snapshot in robin's listing across volumes (GET /api/v2/snapshots)."""
    return SnapshotRef(VolumeRef(item["volume_kind"], item["project"], item["volume"]), item["name"])


def _pages(fetch: Callable[..., dict]) -> Iterator[dict]:
    """Every item of a robin list, page after page; nothing when what it lists went away meanwhile."""
    cursor = None
    while True:
        try:
            page = fetch(limit=ROBIN_PAGE, cursor=cursor)
        except RobinApiError as exc:
            if exc.code in NOT_FOUND_CODES:
                return
            raise
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


# --- the service ------------------------------------------------------------------------------------------------

@csi_service
class Controller(rpc.ControllerServicer):
    def __init__(self, config: ShimConfig, robin: RobinClient):
        self.config, self.robin = config, robin
        self.provisioning = Provisioning(robin)
        self.inflight = InFlight()

    def ControllerGetCapabilities(self, request, context):
        return pb.ControllerGetCapabilitiesResponse(capabilities=[
            pb.ControllerServiceCapability(rpc=RPC(type=kind)) for kind in CAPABILITIES])

    # --- CreateVolume ---------------------------------------------------------------------------------------------

    def CreateVolume(self, request, context):
        if not request.name:
            raise invalid("name is required")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities are required")
        if request.mutable_parameters:
            raise invalid("mutable_parameters are not supported (no MODIFY_VOLUME)")
        params = Parameters.parse(request.parameters, self.config.default_project)
        problem = capability_problem(params.kind, request.volume_capabilities)
        if problem:
            raise invalid(problem)
        ref = volume_ref(params.kind, params.project, request.name)
        with self.inflight.hold("create-volume:" + request.name, ref.handle):
            volume = self.provisioning.volume(ref)
            if volume is None:
                volume = self._new_volume(request, params, ref)
            else:
                self._check_compatible(request, params, ref, volume)
        source = request.volume_content_source if request.HasField("volume_content_source") else None
        return pb.CreateVolumeResponse(volume=self._volume_message(ref, volume, source, params.mount))

    def _new_volume(self, request, params: Parameters, ref: VolumeRef) -> dict:
        clone = self._clone_source(request, params, ref)
        try:
            provisioned = self._create(ref, params, clone,
                                       new_volume_size(request.capacity_range, clone.size if clone else 0))
        except VolumeTaken as exc:
            if exc.volume is None:
                raise CsiError(grpc.StatusCode.ALREADY_EXISTS, str(exc)) from exc
            provisioned = Provisioned(exc.volume, created=False)  # someone else's: _check_compatible says so
        if not provisioned.created:  # robin has the name: made meanwhile (another replica of the plugin)
            self._check_compatible(request, params, ref, provisioned.volume)
        return provisioned.volume

    def _create(self, ref: VolumeRef, params: Parameters, clone: CloneSource | None, size: int) -> Provisioned:
        """The volume robin made, or the one of that name it has (VolumeTaken when not made by this plugin)."""
        fields = {"source": clone.source} if clone else params.fields  # a clone takes its parent's pool and cluster
        try:
            provisioned = self.provisioning.provision(ref, size, owner=csi_owner(ref), quota=params.quota,
                                                      fields=fields)
        except RobinApiError as exc:
            if size_refused(exc):
                raise out_of_range(f"robin refused {size} bytes: {exc.explanation}") from exc
            if exc.code == "project_not_found":  # deleted since we made it: the CO's retry makes it again
                raise aborted(f"project {ref.project} went away while creating {ref.handle}; retry") from exc
            raise
        if provisioned.created:
            log.info("created %s (%d bytes)%s", ref.handle, size, f" from {clone.origin[1]}" if clone else "")
        return provisioned

    def _check_compatible(self, request, params: Parameters, ref: VolumeRef, volume: dict) -> None:
        """A volume of this name exists: it is the answer if it is what the request asks for (the spec's
        idempotency), else ALREADY_EXISTS."""
        required, limit = capacity_range(request.capacity_range)
        size = volume_size(ref.kind, volume)
        problem = not_ours(ref, volume, unrecorded_ok=False) or params.mismatch(ref, volume)
        if problem is None and (size < required or (limit and size > limit)):
            problem = f"{ref.handle} has {size} bytes, outside required_bytes {required}, limit_bytes {limit}"
        wanted = self._requested_origin(request)
        if problem is None and wanted != content_source_of(ref, volume):
            problem = f"{ref.handle} was not made from {wanted[1] if wanted else 'nothing (an empty volume)'}"
        if problem:
            raise CsiError(grpc.StatusCode.ALREADY_EXISTS, f"volume {request.name!r} exists and differs: {problem}")
        self._require_ready(ref, volume)

    @staticmethod
    def _requested_origin(request) -> tuple | None:
        which = request.volume_content_source.WhichOneof("type") if request.HasField("volume_content_source") \
            else None
        if which == "snapshot":
            return ("snapshot", request.volume_content_source.snapshot.snapshot_id)
        if which == "volume":
            return ("volume", request.volume_content_source.volume.volume_id)
        return None

    @staticmethod
    def _require_ready(ref: VolumeRef, volume: dict) -> None:
        if volume.get("state") not in ("available", "resizing"):
            raise aborted(f"{ref.handle} is {volume.get('state')}; retry later")

    def _clone_source(self, request, params: Parameters, ref: VolumeRef) -> CloneSource | None:
        if not request.HasField("volume_content_source"):
            return None
        origin = self._requested_origin(request)
        if origin is None:
            raise invalid("volume_content_source names neither a snapshot nor a volume")
        snapshot = SnapshotRef.parse(origin[1]) if origin[0] == "snapshot" else None
        source_ref = snapshot.volume if snapshot else parse_volume_id(origin[1])
        if source_ref is None:
            raise not_found(f"source {origin[0]} {origin[1]} does not exist")
        if source_ref.kind != "rbd" or params.kind != "rbd":
            raise invalid("robin clones RBD images only: a CephFS path can be neither a source nor a clone")
        if source_ref.project != ref.project:
            raise invalid(f"robin clones within a project: source {origin[1]} is in project {source_ref.project}, "
                          f"the new volume in {ref.project}")
        parent = self.provisioning.volume(source_ref)
        if parent is None:
            raise not_found(f"source {origin[0]} {origin[1]} does not exist")
        problem = not_ours(source_ref, parent) if snapshot is None else None
        if problem:
            raise invalid(f"source {problem}")
        problem = params.placement_mismatch(source_ref, parent)
        if problem:
            raise invalid(f"a clone lives where its source does, and the parameters say otherwise: {problem}")
        if snapshot is None:
            return CloneSource({"image": source_ref.name}, parent["size_bytes"], origin)
        taken = self._snapshot(snapshot)
        if taken is None:
            raise not_found(f"source snapshot {origin[1]} does not exist")
        return CloneSource({"image": source_ref.name, "snapshot": snapshot.name}, taken["size_bytes"], origin)

    def _volume_message(self, ref: VolumeRef, volume: dict, source: pb.VolumeContentSource | None,
                        mount: dict | None = None) -> pb.Volume:
        """`mount`: how the class asks nodes to mount it (CreateVolume's parameters; ListVolumes has none)."""
        context = {**self.provisioning.volume_context(ref, volume), **(mount or {})}
        return pb.Volume(volume_id=ref.handle, capacity_bytes=volume_size(ref.kind, volume),
                         volume_context=context, content_source=source)

    # --- DeleteVolume, ControllerExpandVolume, ValidateVolumeCapabilities ---------------------------------------

    def DeleteVolume(self, request, context):
        """Into robin's trash (restorable for ROBIN_TRASH_DELAY); a volume with snapshots or clones stays
        (FAILED_PRECONDITION), as the spec allows for a plugin whose snapshots depend on their volume."""
        if not request.volume_id:
            raise invalid("volume_id is required")
        ref = parse_volume_id(request.volume_id)
        if ref is None:
            return pb.DeleteVolumeResponse()  # not an id of ours: no such volume
        with self.inflight.hold(ref.handle):
            volume = self.provisioning.volume(ref)
            if volume is None:
                return pb.DeleteVolumeResponse()
            problem = not_ours(ref, volume)
            if problem:
                raise failed_precondition(f"{problem}; robin keeps it")
            try:
                self.robin.delete_volume(ref.kind, ref.project, ref.name)
                log.info("deleted %s (into robin's trash)", ref.handle)
            except RobinApiError as exc:
                if exc.code not in NOT_FOUND_CODES:
                    raise
        return pb.DeleteVolumeResponse()

    def _volume(self, volume_id: str) -> tuple[VolumeRef, dict]:
        ref = parse_volume_id(volume_id)
        volume = self.provisioning.volume(ref) if ref else None
        if volume is None:
            raise not_found(f"volume {volume_id} does not exist")
        return ref, volume

    def ControllerExpandVolume(self, request, context):
        if not request.volume_id:
            raise invalid("volume_id is required")
        if not request.HasField("capacity_range"):
            raise invalid("capacity_range is required")
        required, limit = capacity_range(request.capacity_range)
        target = round_up_to_mib(required)
        if limit and target > limit:
            raise out_of_range(f"{required} bytes rounded up to whole MiB ({target}) is above limit_bytes {limit}")
        block = request.HasField("volume_capability") and request.volume_capability.HasField("block")
        with self.inflight.hold(request.volume_id):
            ref, volume = self._volume(request.volume_id)
            problem = not_ours(ref, volume)
            if problem:
                raise failed_precondition(problem)
            if request.HasField("volume_capability"):
                problem = capability_problem(ref.kind, [request.volume_capability])
                if problem:
                    raise invalid(problem)
            if target > volume_size(ref.kind, volume):  # never shrink: at or below, the volume is big enough
                volume = self._resize(ref, target)
        # The file system on an RBD image grows on the node; a CephFS quota and a raw block device are done here.
        return pb.ControllerExpandVolumeResponse(capacity_bytes=volume_size(ref.kind, volume),
                                                 node_expansion_required=ref.kind == "rbd" and not block)

    def _resize(self, ref: VolumeRef, size: int) -> dict:
        try:
            volume = self.robin.resize_volume(ref.kind, ref.project, ref.name, size)
        except RobinApiError as exc:
            if size_refused(exc):
                raise out_of_range(f"robin refused {size} bytes: {exc.explanation}") from exc
            raise
        log.info("expanded %s to %d bytes", ref.handle, size)
        return volume

    def ValidateVolumeCapabilities(self, request, context):
        if not request.volume_id:
            raise invalid("volume_id is required")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities are required")
        ref, volume = self._volume(request.volume_id)
        problem = capability_problem(ref.kind, request.volume_capabilities)
        if problem is None and request.parameters:
            problem = Parameters.parse(request.parameters, ref.project).mismatch(ref, volume)
        if problem is None and request.volume_context:
            problem = self._context_mismatch(ref, volume, request.volume_context)
        if problem:
            return pb.ValidateVolumeCapabilitiesResponse(message=problem)
        return pb.ValidateVolumeCapabilitiesResponse(confirmed=pb.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context, volume_capabilities=request.volume_capabilities,
            parameters=request.parameters))

    def _context_mismatch(self, ref: VolumeRef, volume: dict, given: Mapping[str, str]) -> str | None:
        """Whether a volume_context (from CreateVolume, or robin's provisioner) names this volume. The monitors
        are left out: a cluster's may change while its volumes stay."""
        expected = self.provisioning.volume_context(ref, volume)
        wrong = sorted(k for k, v in given.items() if k in expected and k != "monitors" and expected[k] != v)
        return f"volume_context {', '.join(wrong)} are not those of {ref.handle}" if wrong else None

    # --- ListVolumes, GetCapacity ---------------------------------------------------------------------------------

    def ListVolumes(self, request, context):
        """A page of every live volume robin shows the plugin's token: one page of robin's listing of both kinds
        (GET /api/v2/volumes), in robin's order, so a page costs one request whatever the number of projects and
        volumes. Without max_entries, a page is robin's largest, with a next_token when there are more."""
        if request.max_entries < 0:
            raise invalid("max_entries cannot be negative")
        token = request.starting_token
        cursor = decode_token("all-volumes", token)[0] if token else None
        try:
            page = self.robin.list_all_volumes(limit=min(request.max_entries or ROBIN_PAGE, ROBIN_PAGE),
                                               cursor=cursor)
        except RobinApiError as exc:
            if exc.code == "invalid_cursor":
                raise _foreign_token(token) from exc
            raise
        entries = [self._volume_entry(item) for item in page["items"]]
        next_token = encode_token("all-volumes", (page["next_cursor"],)) if page.get("next_cursor") else ""
        return pb.ListVolumesResponse(entries=entries, next_token=next_token)

    def _volume_entry(self, volume: dict) -> pb.ListVolumesResponse.Entry:
        ref = VolumeRef(volume["kind"], volume["project"], volume["name"])
        source = content_source_message(content_source_of(ref, volume))
        return pb.ListVolumesResponse.Entry(volume=self._volume_message(ref, volume, source))

    def GetCapacity(self, request, context):
        """The bytes left in the quota of the project the parameters name (a project the shim would create has its
        whole quota); 0 when no volume of these capabilities can be made, or the project has no volume left."""
        params = Parameters.parse(request.parameters, self.config.default_project)
        if capability_problem(params.kind, request.volume_capabilities):
            return pb.GetCapacityResponse(available_capacity=0)
        try:
            usage = self.robin.project_usage(params.project)
        except RobinApiError as exc:
            if exc.code != "project_not_found":
                raise
            usage = {"remaining_bytes": params.quota["max_bytes"], "remaining_volumes": params.quota["max_volumes"]}
        available = usage["remaining_bytes"] if usage["remaining_volumes"] > 0 else 0
        return pb.GetCapacityResponse(available_capacity=available)

    # --- snapshots ------------------------------------------------------------------------------------------------

    def CreateSnapshot(self, request, context):
        if not request.name:
            raise invalid("name is required")
        if not request.source_volume_id:
            raise invalid("source_volume_id is required")
        unknown = sorted(k for k in request.parameters if not k.startswith(CSI_PREFIX))
        if unknown:
            raise invalid(f"unknown snapshot parameters: {', '.join(unknown)} (there are none)")
        source = parse_volume_id(request.source_volume_id)
        if source is None:
            raise not_found(f"source volume {request.source_volume_id} does not exist")
        ref = SnapshotRef(source, robin_name(request.name, source.handle + "@"))
        with self.inflight.hold("create-snapshot:" + request.name, ref.id):
            snapshot = self._snapshot(ref, volume_must_exist=True)
            if snapshot is None:
                self._refuse_name_elsewhere(request.name, source)
                snapshot = self._create_snapshot(ref)
        if snapshot["state"] != "available":
            raise aborted(f"snapshot {ref.id} is {snapshot['state']}; retry later")
        return pb.CreateSnapshotResponse(snapshot=self._snapshot_message(ref, snapshot))

    def _snapshot(self, ref: SnapshotRef, volume_must_exist: bool = False) -> dict | None:
        """robin's snapshot, or None when it does not exist (NOT_FOUND when its volume does not either and
        `volume_must_exist`)."""
        try:
            return self.robin.get_snapshot(ref.volume.kind, ref.volume.project, ref.volume.name, ref.name)
        except RobinApiError as exc:
            if exc.code not in NOT_FOUND_CODES:
                raise
            if volume_must_exist and exc.code != "snapshot_not_found":
                raise not_found(f"source volume {ref.volume.handle} does not exist") from exc
            return None

    def _refuse_name_elsewhere(self, csi_name: str, source: VolumeRef) -> None:
        """ALREADY_EXISTS when another volume of the project has a snapshot of this CSI name (the spec: one name,
        one snapshot). One request, for a snapshot not made yet: robin's snapshots of the project by the robin
        names this CSI name can have (a snapshot of such a name on a volume whose id would map it otherwise is
        not this one)."""
        found = _pages(functools.partial(self.robin.list_all_snapshots, project=source.project,
                                         names=robin_names(csi_name)))
        for snapshot in found:
            other = VolumeRef(snapshot["volume_kind"], source.project, snapshot["volume"])
            if other != source and snapshot["name"] == robin_name(csi_name, other.handle + "@"):
                raise CsiError(grpc.StatusCode.ALREADY_EXISTS, f"snapshot {csi_name!r} exists already, of volume "
                                                               f"{other.handle}, not {source.handle}")

    def _create_snapshot(self, ref: SnapshotRef) -> dict:
        volume = ref.volume
        try:
            snapshot = self.robin.create_snapshot(volume.kind, volume.project, volume.name, ref.name)
        except RobinApiError as exc:
            if exc.code in ("volume_not_found", "project_not_found"):
                raise not_found(f"source volume {volume.handle} does not exist") from exc
            if exc.code != "snapshot_exists":
                raise
            snapshot = self._snapshot(ref, volume_must_exist=True)  # a concurrent create (another replica)
            if snapshot is None:
                raise aborted(f"snapshot {ref.id} came and went; retry") from exc
            return snapshot
        log.info("created snapshot %s", ref.id)
        return snapshot

    @staticmethod
    def _snapshot_message(ref: SnapshotRef, snapshot: dict) -> pb.Snapshot:
        return pb.Snapshot(snapshot_id=ref.id, source_volume_id=ref.volume.handle, size_bytes=snapshot["size_bytes"],
                           creation_time=_timestamp(snapshot["created_at"]),
                           ready_to_use=snapshot["state"] == "available")

    def DeleteSnapshot(self, request, context):
        if not request.snapshot_id:
            raise invalid("snapshot_id is required")
        ref = SnapshotRef.parse(request.snapshot_id)
        if ref is None:
            return pb.DeleteSnapshotResponse()  # not an id of ours: no such snapshot
        with self.inflight.hold(ref.id):
            try:
                self.robin.delete_snapshot(ref.volume.kind, ref.volume.project, ref.volume.name, ref.name)
                log.info("deleted snapshot %s", ref.id)
            except RobinApiError as exc:
                if exc.code not in NOT_FOUND_CODES:
                    raise
        return pb.DeleteSnapshotResponse()

    def ListSnapshots(self, request, context):
        """By snapshot_id, by source_volume_id, or all of them; an id that names nothing gives an empty list.
        Only snapshots robin has finished taking (ready to use) are listed."""
        if not (request.snapshot_id or request.source_volume_id):
            return self._all_snapshots(request.starting_token, request.max_entries)
        after = decode_token("snapshots", request.starting_token)
        if request.snapshot_id:
            entries = self._snapshot_by_id(request.snapshot_id, request.source_volume_id)
        else:
            source = parse_volume_id(request.source_volume_id)
            entries = self._snapshots_of(source) if source else iter(())
        page, token = paginate(entries, after, request.max_entries, "snapshots")
        return pb.ListSnapshotsResponse(entries=page, next_token=token)

    def _all_snapshots(self, starting_token: str, max_entries: int) -> pb.ListSnapshotsResponse:
        """A page of every snapshot robin shows the plugin's token: one page of robin's listing, in robin's order
        (by id), so a page costs one request whatever the number of volumes and snapshots. Without max_entries,
        a page is robin's largest, with a next_token when there are more."""
        if max_entries < 0:
            raise invalid("max_entries cannot be negative")
        cursor = decode_token("all-snapshots", starting_token)[0] if starting_token else None
        try:
            page = self.robin.list_all_snapshots(state="available", limit=min(max_entries or ROBIN_PAGE, ROBIN_PAGE),
                                                 cursor=cursor)
        except RobinApiError as exc:
            if exc.code == "invalid_cursor":
                raise _foreign_token(starting_token) from exc
            raise
        entries = [pb.ListSnapshotsResponse.Entry(snapshot=self._snapshot_message(_listed_snapshot_ref(item), item))
                   for item in page["items"]]
        token = encode_token("all-snapshots", (page["next_cursor"],)) if page.get("next_cursor") else ""
        return pb.ListSnapshotsResponse(entries=entries, next_token=token)

    @staticmethod
    def _snapshot_key(ref: SnapshotRef) -> tuple:
        return (ref.volume.project, KINDS.index(ref.volume.kind), ref.volume.name, ref.name)

    def _snapshot_entry(self, ref: SnapshotRef, snapshot: dict) -> tuple[tuple, pb.ListSnapshotsResponse.Entry]:
        return self._snapshot_key(ref), pb.ListSnapshotsResponse.Entry(snapshot=self._snapshot_message(ref, snapshot))

    def _snapshot_by_id(self, snapshot_id: str, source_volume_id: str) -> Iterator[tuple]:
        ref = SnapshotRef.parse(snapshot_id)
        if ref is None or (source_volume_id and source_volume_id != ref.volume.handle):
            return
        snapshot = self._snapshot(ref)
        if snapshot is not None and snapshot["state"] == "available":
            yield self._snapshot_entry(ref, snapshot)

    def _snapshots_of(self, volume: VolumeRef) -> Iterator[tuple]:
        snapshots = _pages(functools.partial(self.robin.list_snapshots, volume.kind, volume.project, volume.name))
        for snapshot in sorted(snapshots, key=lambda s: s["name"]):
            if snapshot["state"] == "available":
                yield self._snapshot_entry(SnapshotRef(volume, snapshot["name"]), snapshot)
