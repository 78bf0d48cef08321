"""drift image checks: what the drift survey last found by opening each RBD image, and its header's signature

Revision ID: 0016_drift_image_checks
Revises: 0015_read_path_indexes
Create Date: 2026-12-06 14:50:00
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0016_drift_image_checks'
down_revision = '0015_read_path_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('drift_image_checks',
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('pool', sa.String(length=128), nullable=False),
    sa.Column('image_id', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('checked_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['ceph_clusters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('cluster_id', 'pool', 'image_id')
    )


def downgrade() -> None:
    op.drop_table('drift_image_checks')
