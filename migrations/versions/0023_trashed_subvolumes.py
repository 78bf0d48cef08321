"""trashed subvolumes by name: a subvolume's create refuses a name the trash still holds on its file system

Revision ID: 0023_trashed_subvolumes
Revises: 0022_usage_index
Create Date: 2026-12-07 15:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0023_trashed_subvolumes'
down_revision = '0022_usage_index'
branch_labels = None
depends_on = None

TRASHED_SUBVOLUME = sa.text("state = 'deleted' AND trash_ref IS NOT NULL AND layout = 'subvolume'")


def upgrade() -> None:
    op.create_index('ix_cephfs_paths_trashed_subvolumes', 'cephfs_paths', ['cluster_id', 'fs_name', 'name'],
                    unique=False, sqlite_where=TRASHED_SUBVOLUME, postgresql_where=TRASHED_SUBVOLUME)


def downgrade() -> None:
    op.drop_index('ix_cephfs_paths_trashed_subvolumes', table_name='cephfs_paths', sqlite_where=TRASHED_SUBVOLUME,
                  postgresql_where=TRASHED_SUBVOLUME)
