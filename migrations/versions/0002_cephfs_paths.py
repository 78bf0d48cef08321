"""cephfs paths

Revision ID: 0002_cephfs_paths
Revises: 0001_core
Create Date: 2026-11-27 12:17:09.260433
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0002_cephfs_paths'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cephfs_paths',
    sa.Column('fs_name', sa.String(length=128), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('quota_bytes', sa.BigInteger(), nullable=False),
    sa.Column('target_quota_bytes', sa.BigInteger(), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('state', sa.Enum('creating', 'available', 'resizing', 'deleting', 'deleted', 'error', name='volume_state', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', robin.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['ceph_clusters.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('cephfs_paths', schema=None) as batch_op:
        batch_op.create_index('ix_cephfs_paths_state', ['state'], unique=False)
        batch_op.create_index('uq_cephfs_paths_ceph_name', ['cluster_id', 'fs_name', 'name'], unique=True, sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.create_index('uq_cephfs_paths_project_name', ['project_id', 'name'], unique=True, sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))



def downgrade() -> None:
    with op.batch_alter_table('cephfs_paths', schema=None) as batch_op:
        batch_op.drop_index('uq_cephfs_paths_project_name', sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.drop_index('uq_cephfs_paths_ceph_name', sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.drop_index('ix_cephfs_paths_state')

    op.drop_table('cephfs_paths')
