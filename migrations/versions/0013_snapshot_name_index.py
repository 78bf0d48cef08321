"""snapshot name index: a project's snapshots of a name, across its volumes, by index

Revision ID: 0013_snapshot_name_index
Revises: 0012_gateway_agent
Create Date: 2026-12-06 12:00:00
"""
from alembic import op


revision = '0013_snapshot_name_index'
down_revision = '0012_gateway_agent'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index('ix_snapshots_project_name', ['project_id', 'name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index('ix_snapshots_project_name')
