"""What /v1 needs beyond robin's services: the platform's project, finding its volumes by their bare
Ceph names, and listing across projects. Every change goes through robin's own services, with
the caller's identity, so their checks, quotas, states and undo logic are the ones /api/v2 has."""
from __future__ import annotations

from sqlalchemy import select

from robin import config
from robin.auth.identity import Identity
from robin.clusters import service as clusters
from robin.db import db
from robin.errors import NotFound
from robin.gateway import activation
from robin.gateway.models import MountState, VerifyState
from robin.projects.models import Project
from robin.snapshots import service as snapshots
from robin.snapshots.models import Snapshot, SnapshotState
from robin.volumes import service as volumes
from robin.volumes.kinds import CEPHFS, RBD, Kind
from robin.volumes.models import Volume, VolumeState

MiB = 2**20
PAGE = 1000
HANDLE_KINDS = {RBD.noun: "rbd", CEPHFS.noun: "cephfs"}  # a volume handle's first part, by kind


def platform_project() -> str:
    """The project that owns the volumes Wayne creates (ROBIN_WAYNE_PROJECT)."""
    return config.current().wayne_project


def images(identity: Identity, kinds: tuple[Kind, ...]) -> list[Volume]:
    """Live volumes of these kinds on the default cluster, in every project the token may read:
    Wayne lists them all at once, without pages."""
    found = []
    with db.reading() as session:
        cluster = clusters.resolve(session, None)
        for kind in kinds:
            model = kind.model
            query = select(model).where(model.cluster_id == cluster.id, model.state != VolumeState.DELETED)
            if not identity.sees_all_projects:
                query = query.where(model.project_id == _project_id(identity.project))
            found += session.scalars(query.order_by(model.name)).unique()
    return found


def _project_id(name: str):
    return select(Project.id).where(Project.name == name).scalar_subquery()


def create_image(identity: Identity, kind: Kind, project: str, name: str, size_mib: int) -> Volume:
    try:
        return volumes.create(identity, kind, project, {"name": name, "size_bytes": size_mib * MiB})
    except NotFound as exc:
        if exc.code != "project_not_found":
            raise
        # Not created here: a project made on the fly would need a quota robin cannot choose for the admins.
        raise NotFound(f"project {project!r}, which owns the volumes Wayne creates (ROBIN_WAYNE_PROJECT), does "
                       "not exist; an admin creates it with its quota (POST /api/v2/projects)",
                       code="project_not_found", details={"project": project}) from exc


def resolve(identity: Identity, kind: Kind, name: str) -> tuple[str, str]:
    """The project and bare Ceph name of the volume a /v1 URL names: by its bare Ceph name, or by the volume
    handle of a CSI PersistentVolume robin's provisioner made (`spec.csi.volumeHandle`, `<kind>:<project>:<name>`;
    a bare name never has a colon). It is the platform's, when that has a live volume of this kind and name on
    the default cluster that the token may read. /v1 is the platform's contract for its own project: another
    project's volume (a handle naming another project, or another kind) is not there for /v1, whoever asks
    (admins use /api/v2). And one the token may not read is answered exactly as one that does not exist, so that
    no answer tells which names exist in a project, or which project owns a name."""
    project = platform_project()
    bare = _bare_name(kind, project, name)
    if bare is None or not identity.can_read(project) or not _is_live(kind, project, bare):
        raise NotFound(f"{kind.noun} {name!r} does not exist among the platform's volumes (ROBIN_WAYNE_PROJECT) "
                       "on the default cluster", code="volume_not_found", details={"name": name})
    return project, bare


def _bare_name(kind: Kind, project: str, name: str) -> str | None:
    """`name` itself, or the name in a handle of this kind in `project`; None for any other handle."""
    if ":" not in name:
        return name
    handle = name.split(":")
    return handle[2] if len(handle) == 3 and handle[:2] == [HANDLE_KINDS[kind.noun], project] else None


def _is_live(kind: Kind, project: str, name: str) -> bool:
    model = kind.model
    with db.reading() as session:
        cluster = clusters.resolve(session, None)
        return session.scalar(select(model.id).where(
            model.project_id == _project_id(project), model.cluster_id == cluster.id, model.name == name,
            model.state != VolumeState.DELETED)) is not None


# --- RBD snapshots ------------------------------------------------------------------------------

def list_snapshots(identity: Identity, project: str, image: str) -> list[Snapshot]:
    found, cursor = [], None
    while True:
        page = snapshots.list_page(identity, RBD, project, image, PAGE, cursor)
        found += page.items
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def delete_snapshot(identity: Identity, project: str, image: str, name: str) -> Snapshot:
    """Delete one snapshot; answers with it, so that Wayne has a body to parse."""
    return _delete(identity, project, image, snapshots.get(identity, RBD, project, image, name))


def delete_all_snapshots(identity: Identity, project: str, image: str) -> list[Snapshot]:
    """One at a time through the service: a failure stops there, with the earlier ones deleted."""
    return [_delete(identity, project, image, snapshot) for snapshot in list_snapshots(identity, project, image)]


def _delete(identity: Identity, project: str, image: str, snapshot: Snapshot) -> Snapshot:
    snapshots.delete(identity, RBD, project, image, snapshot.name)
    snapshot.state = SnapshotState.DELETED  # the detached copy the answer shows; the service updated the row
    return snapshot


# --- devices: volumes activated on the data gateway ------------------------------------------------

def device(identity: Identity, kind: Kind, project: str, name: str, *, change: bool) -> Volume:
    """The volume, once the identity may read it (and change it, for anything but its status)."""
    if change:
        identity.require_write(project)
    volume = volumes.get(identity, kind, project, name)
    if change:
        volumes.require_available(kind, volume, "activated or changed on the gateway")
    return volume


def activate(identity: Identity, kind: Kind, project: str, name: str, user: str, password: str) -> dict:
    volume = device(identity, kind, project, name, change=True)
    activation.activate(volume, user, password)
    return _device_status(volume, activation.activation_of(volume))


def deactivate(identity: Identity, kind: Kind, project: str, name: str) -> dict:
    volume = device(identity, kind, project, name, change=True)
    if not activation.deactivate(volume):
        return {"status": [], "msg": f"{name} was not activated"}
    return {"status": [], "msg": f"{name} is deactivated"}


def forbid_login(identity: Identity, kind: Kind, project: str, name: str) -> dict:
    volume = device(identity, kind, project, name, change=True)
    activation.forbid_login(volume)
    return _device_status(volume, activation.activation_of(volume))


def device_status(identity: Identity, kind: Kind, project: str, name: str) -> dict:
    volume = device(identity, kind, project, name, change=False)
    return _device_status(volume, activation.activation_of(volume))


def verify(identity: Identity, kind: Kind, project: str, name: str) -> dict:
    volume = device(identity, kind, project, name, change=True)
    return _device_status(volume, activation.verify(volume))


_VERIFY_STATES = {VerifyState.VERIFYING: "Verifying", VerifyState.OK: "VerifyOk", VerifyState.FAILED: "VerifyFailed"}


def _device_status(volume: Volume, found: activation.Activation | None) -> dict:
    """Wayne's device status: [] when not activated, else Mount (as the gateway agent reported it) and what holds
    for the account."""
    if found is None:
        if activation.being_deactivated(volume):
            return {"status": [], "msg": f"{volume.name} is deactivated; the gateway agent has not unmounted it yet"}
        return {"status": [], "msg": f"{volume.name} is not activated"}
    states = ["Mount"] if found.mounted else []
    if found.login_forbidden:
        states.append("LoginForbidden")
    if found.verify_state is not None:
        states.append(_VERIFY_STATES[found.verify_state])
    message = found.verify_message
    if not found.mounted:
        message = message or _not_mounted(found)
    return {"status": states, "msg": message or f"activated for user {found.username}"}


def _not_mounted(found: activation.Activation) -> str:
    if found.mount_state is MountState.PENDING:
        return f"the account of user {found.username} exists; the volume waits for the gateway agent to mount it"
    if found.mount_error is not None:
        return f"the account of user {found.username} exists but the gateway could not mount the volume: " \
               f"{found.mount_error}"
    return f"the account of user {found.username} exists but the volume is not mounted"
