"""rollback state: rolling_back and flattening, the snapshot a rollback goes to, purged rows' trash_ref cleared

Revision ID: 0011_rollback_state
Revises: 0010_migration_lock
Create Date: 2026-12-06 05:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011_rollback_state'
down_revision = '0010_migration_lock'
branch_labels = None
depends_on = None

OLD_STATES = "state IN ('creating', 'available', 'resizing', 'deleting', 'deleted', 'error')"
NEW_STATES = ("state IN ('creating', 'available', 'resizing', 'rolling_back', 'flattening', 'deleting', 'deleted', "
              "'error')")
TABLES = ('rbd_images', 'cephfs_paths')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint('volume_state', type_='check')
            batch_op.create_check_constraint('volume_state', NEW_STATES)
    with op.batch_alter_table('rbd_images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rollback_snapshot', sa.String(length=128), nullable=True))
    # A purge now clears trash_ref when done (one with purged_at and trash_ref is unfinished, for the
    # reconciler): so it is for the rows purged before.
    for table in TABLES:
        op.execute(f"UPDATE {table} SET trash_ref = NULL WHERE purged_at IS NOT NULL")


def downgrade() -> None:
    # A row caught mid-rollback or mid-flatten goes back to the states the previous revision knows:
    # `error`, for an admin to look at (the reconciler of that revision would resize it blindly).
    for table in TABLES:
        op.execute(f"UPDATE {table} SET state = 'error', error_message = 'interrupted rollback or flatten' "
                   "WHERE state IN ('rolling_back', 'flattening')")
    with op.batch_alter_table('rbd_images', schema=None) as batch_op:
        batch_op.drop_column('rollback_snapshot')
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint('volume_state', type_='check')
            batch_op.create_check_constraint('volume_state', OLD_STATES)
