from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.clusters import service
from robin.clusters.schemas import ClusterCreateSchema, ClusterDetailSchema, ClusterSchema

blp = Blueprint("clusters", __name__, url_prefix="/api/v2/clusters", description="The Ceph clusters robin manages")


@blp.route("")
class Clusters(MethodView):
    @blp.response(200, ClusterSchema(many=True))
    def get(self):
        return service.list_all(g.identity)

    @blp.arguments(ClusterCreateSchema)
    @blp.response(201, ClusterSchema)
    def post(self, body):
        """Register another cluster (admin): by a ceph.conf on robin's hosts, or by monitors and a key."""
        return service.register(g.identity, body)


@blp.route("/<name>")
class ClusterItem(MethodView):
    @blp.response(200, ClusterDetailSchema)
    def get(self, name):
        """The cluster and what it offers: pools and CephFS file systems (or why it is unreachable)."""
        return service.get(g.identity, name)

    @blp.response(204)
    def delete(self, name):
        """Unregister a cluster no volume row references (admin)."""
        service.unregister(g.identity, name)
