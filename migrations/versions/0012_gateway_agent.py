"""gateway agent: an activation's mount state, reported by `robin gateway`; mount_path set once mounted

Revision ID: 0012_gateway_agent
Revises: 0011_rollback_state
Create Date: 2026-12-06 11:00:00
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0012_gateway_agent'
down_revision = '0011_rollback_state'
branch_labels = None
depends_on = None

MOUNT_STATES = ('pending', 'mounted', 'failed', 'unmounting')


def upgrade() -> None:
    with op.batch_alter_table('gateway_accounts', schema=None) as batch_op:
        # Accounts made before were mounted by the API process in the same directory: the agent finds those
        # mounts in the kernel's table (or mounts them again).
        batch_op.add_column(sa.Column('mount_state', sa.Enum(*MOUNT_STATES, name='mount_state', native_enum=False,
                                                             create_constraint=True, length=16),
                                      nullable=False, server_default='mounted'))
        batch_op.add_column(sa.Column('mount_error_code', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('mount_error_status', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('mount_error_message', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('mount_reported_at', robin.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.alter_column('mount_path', existing_type=sa.String(length=1024), nullable=True)
    with op.batch_alter_table('gateway_accounts', schema=None) as batch_op:
        batch_op.alter_column('mount_state', existing_type=sa.String(length=16), server_default=None)


def downgrade() -> None:
    # The previous revision knows only mounted accounts (the API mounted before it wrote the row): an activation
    # the agent has not mounted, or is taking down, is dropped; its mount, if any, stays for an admin to unmount.
    op.execute("DELETE FROM gateway_accounts WHERE mount_state <> 'mounted' OR mount_path IS NULL")
    with op.batch_alter_table('gateway_accounts', schema=None) as batch_op:
        batch_op.alter_column('mount_path', existing_type=sa.String(length=1024), nullable=False)
        batch_op.drop_column('mount_reported_at')
        batch_op.drop_column('mount_error_message')
        batch_op.drop_column('mount_error_status')
        batch_op.drop_column('mount_error_code')
        batch_op.drop_constraint('mount_state', type_='check')
        batch_op.drop_column('mount_state')
