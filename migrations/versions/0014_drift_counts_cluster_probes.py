"""drift counts and cluster probes: what the maintenance loop last found, for the metrics scrape

Revision ID: 0014_drift_counts_cluster_probes
Revises: 0013_snapshot_name_index
Create Date: 2026-12-06 11:40:00
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0014_drift_counts_cluster_probes'
down_revision = '0013_snapshot_name_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('drift_counts',
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('findings', sa.Integer(), nullable=False),
    sa.Column('surveyed_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kind')
    )
    op.create_table('cluster_probes',
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('up', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('probed_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['ceph_clusters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('cluster_id')
    )


def downgrade() -> None:
    op.drop_table('cluster_probes')
    op.drop_table('drift_counts')
