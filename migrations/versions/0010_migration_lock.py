"""migration lock: the run that holds a destination

Revision ID: 0010_migration_lock
Revises: 0009_volume_owner
Create Date: 2026-12-06 05:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_migration_lock'
down_revision = '0009_volume_owner'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('migration_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('migration_records', schema=None) as batch_op:
        batch_op.drop_column('run')
