"""The `/v1` views: Wayne's paths and shapes over robin's services.

A view resolves the bare Ceph name (or CSI volume handle) in the URL to a volume of the platform's project
(service.resolve: never another project's, and one the token may not read is answered as a missing one), then
calls the service /api/v2 would call with that project and the request's identity. Errors are robin's own
RobinErrors; protocol.WayneProtocol turns them into the plain text Wayne shows.
"""
from __future__ import annotations

from flask import Flask, g, request
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.audit.service import audit_this_read
from robin.compat.wayne_v1 import schemas, service
from robin.compat.wayne_v1.protocol import PREFIX, WayneProtocol
from robin.errors import Api
from robin.snapshots import service as snapshots
from robin.volumes.kinds import CEPHFS, RBD, Kind

KINDS = {"rbd": RBD, "cephfs": CEPHFS}

blp = Blueprint("wayne-v1", __name__, url_prefix=PREFIX, description=(
    "The API the Wayne dashboard's Robin client calls. Authenticate with a `token` header (or "
    "`Authorization: Bearer`). Every 200 answer is JSON; any other status has a plain-text body "
    "`<code>: <message>`, robin's error code first."))
# Documents both headers on every operation; the `token` scheme is added to the spec by install().
with_token = blp.doc(security=[{"token": []}, {"bearer": []}])


def _audited_in(project: str) -> str:
    """The audit hook files an event under the URL's `project` argument; /v1 URLs name only the
    volume, so file it under the project the name resolved to."""
    request.view_args["project"] = project
    return project


@blp.route("/images")
class Images(MethodView):
    @with_token
    @blp.arguments(schemas.ImageListArgs, location="query")
    @blp.response(200, schemas.ImageListSchema)
    def get(self, args):
        """Live volumes on the default cluster in the projects the token may read; `size` in MiB."""
        kinds = tuple(KINDS.values()) if args["type"] == "all" else (KINDS[args["type"]],)
        return {"images": service.images(g.identity, kinds)}


@blp.route("/image")
class Image(MethodView):
    @with_token
    @blp.arguments(schemas.ImageTypeArgs, location="query")
    @blp.arguments(schemas.ImageCreateSchema)
    @blp.response(200, schemas.ImageSchema)
    def put(self, args, body):
        """Create an RBD image or CephFS path of `size` MiB in the platform's project (ROBIN_WAYNE_PROJECT)."""
        project = _audited_in(service.platform_project())
        return service.create_image(g.identity, KINDS[args["type"]], project, body["name"], body["size"])


@blp.route("/snaps/<name>")
class Snaps(MethodView):
    @with_token
    @blp.response(200, schemas.SnapListSchema)
    def get(self, name):
        """The RBD image's snapshots; `size` in bytes."""
        return {"snaps": service.list_snapshots(g.identity, *service.resolve(g.identity, RBD, name))}

    @with_token
    @blp.response(200, schemas.DeletedSnapsSchema)
    def delete(self, name):
        """Delete all the image's snapshots; answers with those deleted."""
        project, name = _resolved(RBD, name)
        return {"deleted": service.delete_all_snapshots(g.identity, project, name)}


@blp.route("/snap/<name>/<version>")
class Snap(MethodView):
    @with_token
    @blp.response(200, schemas.SnapSchema)
    def put(self, name, version):
        """Take snapshot `version` of the RBD image; counts against the project's max_snapshots."""
        version = schemas.snapshot_name(version)
        project, name = _resolved(RBD, name)
        return snapshots.create(g.identity, RBD, project, name, version)

    @with_token
    @blp.response(200, schemas.SnapSchema)
    def delete(self, name, version):
        project, name = _resolved(RBD, name)
        return service.delete_snapshot(g.identity, project, name, version)

    @with_token
    @blp.response(200, schemas.SnapSchema)
    def post(self, name, version):
        """Roll the image back to snapshot `version`; 409 volume_in_use while anything has it open or mapped."""
        project, name = _resolved(RBD, name)
        return snapshots.rollback(g.identity, RBD, project, name, version)


def _resolved(kind: Kind, name: str) -> tuple[str, str]:
    """The project and bare name the URL's name resolves to, the project filed for the audit hook."""
    project, name = service.resolve(g.identity, kind, name)
    return _audited_in(project), name


def _device(args: dict, name: str, audited: bool = True) -> tuple[Kind, str, str]:
    """The kind `?type=` names, and the project and bare name the volume's name resolves to."""
    kind = KINDS[args["type"]]
    project, name = _resolved(kind, name) if audited else service.resolve(g.identity, kind, name)
    return kind, project, name


@blp.route("/device/<name>")
class Device(MethodView):
    @with_token
    @blp.arguments(schemas.ImageTypeArgs, location="query")
    @blp.arguments(schemas.DeviceActivateSchema)
    @blp.response(200, schemas.DeviceStatusSchema)
    def put(self, args, body, name):
        """Activate: the gateway agent (`robin gateway`) mounts the volume on the gateway's host and an SFTP account
        is opened rooted at it (again: the user's password is replaced, the mount kept). Waits for the agent's
        report up to ROBIN_GATEWAY_ACTIVATION_WAIT: 503 gateway_unavailable when none came. 409 volume_in_use for
        an RBD image a node has mapped."""
        return service.activate(g.identity, *_device(args, name), body["user"], body["password"])

    @with_token
    @blp.arguments(schemas.ImageTypeArgs, location="query")
    @blp.response(200, schemas.DeviceStatusSchema)
    def delete(self, args, name):
        """Deactivate: logins end at once; the gateway agent unmounts, then the account goes. Not activated is a 200
        saying so; 503 gateway_unavailable when the agent did not unmount within ROBIN_GATEWAY_ACTIVATION_WAIT (the
        deactivation stays recorded and is carried out when the agent runs)."""
        return service.deactivate(g.identity, *_device(args, name))


@blp.route("/device/<name>/status")
class DeviceStatus(MethodView):
    @with_token
    @blp.arguments(schemas.ImageTypeArgs, location="query")
    @blp.response(200, schemas.DeviceStatusSchema)
    def get(self, args, name):
        return service.device_status(g.identity, *_device(args, name, audited=False))


@blp.route("/device/<name>/user")
class DeviceUser(MethodView):
    @with_token
    @blp.arguments(schemas.ImageTypeArgs, location="query")
    @blp.response(200, schemas.DeviceStatusSchema)
    def delete(self, args, name):
        """Force the user offline and refuse logins (LoginForbidden) until the volume is activated again."""
        return service.forbid_login(g.identity, *_device(args, name))


@blp.route("/device/<name>/verify")
class DeviceVerify(MethodView):
    @with_token
    @blp.arguments(schemas.ImageTypeArgs, location="query")
    @blp.response(200, schemas.DeviceStatusSchema)
    def get(self, args, name):
        """Ask the gateway agent for a consistency check in the background (RBD: e2fsck -n of a frozen snapshot's
        clone; CephFS: an MDS scrub); the status shows Verifying, then VerifyOk or VerifyFailed with the reason
        in msg."""
        audit_this_read()  # a GET that starts work
        return service.verify(g.identity, *_device(args, name))


def install(app: Flask, api: Api) -> None:
    """Serve /v1 on this app: the blueprint (in the OpenAPI document too) and Wayne's wire habits."""
    api.spec.components.security_scheme("token", {"type": "apiKey", "in": "header", "name": "token"})
    api.plain_text_errors_under(PREFIX + "/")  # WayneProtocol rewrites them
    api.register_blueprint(blp)
    app.wsgi_app = WayneProtocol(app.wsgi_app)
