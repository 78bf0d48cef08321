"""Imports every model module so Base.metadata knows all tables (for Alembic and test setup)."""
from robin.audit.models import AuditEvent, ClusterProbe, DriftCount, VolumeUsage
from robin.auth.models import ApiToken, DashboardSession
from robin.clusters.models import CephCluster
from robin.gateway.models import GatewayAccount
from robin.migration_records.models import MigrationRecord
from robin.projects.models import Project, Quota
from robin.snapshots.models import Snapshot
from robin.volumes.models import CephfsPath, RbdImage

__all__ = ["ApiToken", "AuditEvent", "CephCluster", "CephfsPath", "ClusterProbe", "DashboardSession", "DriftCount",
           "GatewayAccount", "MigrationRecord", "Project", "Quota", "RbdImage", "Snapshot", "VolumeUsage"]
