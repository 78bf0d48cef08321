"""usage history: samples of each project's and pool's usage at every refresh, downsampled with age, and each
project's last forecast of when it reaches its quota

Revision ID: 0019_usage_history
Revises: 0018_audit_event_indexes
Create Date: 2026-12-07 01:30:00
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0019_usage_history'
down_revision = '0018_audit_event_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('project_usage_samples',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('provisioned_bytes', sa.BigInteger(), nullable=False),
    sa.Column('used_bytes', sa.BigInteger(), nullable=False),
    sa.Column('quota_bytes', sa.BigInteger(), nullable=False),
    sa.Column('volumes', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id', 'step', 'at')
    )
    op.create_index('ix_project_usage_samples_step_at', 'project_usage_samples', ['step', 'at'], unique=False)
    op.create_table('pool_usage_samples',
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('location', sa.String(length=128), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('provisioned_bytes', sa.BigInteger(), nullable=False),
    sa.Column('used_bytes', sa.BigInteger(), nullable=False),
    sa.Column('volumes', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['ceph_clusters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('cluster_id', 'kind', 'location', 'step', 'at')
    )
    op.create_index('ix_pool_usage_samples_step_at', 'pool_usage_samples', ['step', 'at'], unique=False)
    op.create_table('usage_forecasts',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('provisioned_full_at', robin.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('used_full_at', robin.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('computed_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id')
    )


def downgrade() -> None:
    op.drop_table('usage_forecasts')
    op.drop_index('ix_pool_usage_samples_step_at', table_name='pool_usage_samples')
    op.drop_table('pool_usage_samples')
    op.drop_index('ix_project_usage_samples_step_at', table_name='project_usage_samples')
    op.drop_table('project_usage_samples')
