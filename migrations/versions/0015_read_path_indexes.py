"""read path indexes: a project's trash by name, and an image's clones

Revision ID: 0015_read_path_indexes
Revises: 0014_drift_counts_cluster_probes
Create Date: 2026-12-06 15:00:00
"""
from alembic import op
from sqlalchemy import text


revision = '0015_read_path_indexes'
down_revision = '0014_drift_counts_cluster_probes'
branch_labels = None
depends_on = None

IN_TRASH = text("state = 'deleted' AND purged_at IS NULL AND trash_ref IS NOT NULL")
HAS_PARENT = text("parent_id IS NOT NULL")


def upgrade() -> None:
    for table in ('rbd_images', 'cephfs_paths'):
        op.create_index(f'ix_{table}_trash', table, ['project_id', 'name'], unique=False,
                        sqlite_where=IN_TRASH, postgresql_where=IN_TRASH)
    op.create_index('ix_rbd_images_parent_id', 'rbd_images', ['parent_id'], unique=False,
                    sqlite_where=HAS_PARENT, postgresql_where=HAS_PARENT)


def downgrade() -> None:
    op.drop_index('ix_rbd_images_parent_id', table_name='rbd_images')
    for table in ('cephfs_paths', 'rbd_images'):
        op.drop_index(f'ix_{table}_trash', table_name=table)
