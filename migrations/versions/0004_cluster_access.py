"""clusters by monitors and key

Revision ID: 0004_cluster_access
Revises: 0003_snapshots_clones_trash
Create Date: 2026-11-27 12:54:23.933195
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0004_cluster_access'
down_revision = '0003_snapshots_clones_trash'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ceph_clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keyring_path', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('mon_host', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('cephx_key', sa.String(length=128), nullable=True))
        batch_op.alter_column('conf_path',
               existing_type=sa.VARCHAR(length=1024),
               nullable=True)
        batch_op.create_check_constraint(
            'cluster_reachable_somehow', "conf_path IS NOT NULL OR (mon_host IS NOT NULL AND cephx_key IS NOT NULL)")

def downgrade() -> None:
    with op.batch_alter_table('ceph_clusters', schema=None) as batch_op:
        batch_op.drop_constraint('cluster_reachable_somehow', type_='check')
        batch_op.alter_column('conf_path',
               existing_type=sa.VARCHAR(length=1024),
               nullable=False)
        batch_op.drop_column('cephx_key')
        batch_op.drop_column('mon_host')
        batch_op.drop_column('keyring_path')

