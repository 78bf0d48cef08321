"""volume totals: provisioned and used bytes and volume counts per project and pool, summed by the maintenance
leader for the metrics scrape

Revision ID: 0017_volume_totals
Revises: 0016_drift_image_checks
Create Date: 2026-12-06 18:05:00
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0017_volume_totals'
down_revision = '0016_drift_image_checks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('volume_totals',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('location', sa.String(length=128), nullable=False),
    sa.Column('provisioned_bytes', sa.BigInteger(), nullable=False),
    sa.Column('used_bytes', sa.BigInteger(), nullable=False),
    sa.Column('volumes', sa.Integer(), nullable=False),
    sa.Column('summed_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['cluster_id'], ['ceph_clusters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id', 'cluster_id', 'kind', 'location')
    )


def downgrade() -> None:
    op.drop_table('volume_totals')
