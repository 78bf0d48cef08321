"""volume owner: what a volume was made for

Revision ID: 0009_volume_owner
Revises: 0008_secrets
Create Date: 2026-12-06 04:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009_volume_owner'
down_revision = '0008_secrets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('rbd_images', 'cephfs_paths'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('created_for', sa.String(length=255), nullable=True))


def downgrade() -> None:
    for table in ('rbd_images', 'cephfs_paths'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('created_for')
