"""snapshot name index: a project's snapshots of a name, across its volumes, by index

Revision ID: snapshot_name_index
Revises: 0011_rollback_state
Create Date: 2026-12-06 12:00:00
"""
from alembic import op


revision = 'snapshot_name_index'
down_revision = '0011_rollback_state'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index('ix_snapshots_project_name', ['project_id', 'name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index('ix_snapshots_project_name')
