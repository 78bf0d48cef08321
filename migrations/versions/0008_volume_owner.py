"""volume owner: what a volume was made for

Revision ID: 0008_volume_owner
Revises: 0007_migration_records
Create Date: 2026-11-28 10:12:40.118201
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_volume_owner'
down_revision = '0007_migration_records'
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
