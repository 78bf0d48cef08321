"""gateway accounts

Revision ID: 0005_gateway_accounts
Revises: 0004_cluster_access
Create Date: 2026-11-27 15:13:29.631811
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0005_gateway_accounts'
down_revision = '0004_cluster_access'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rbd_image_id', sa.String(length=36), nullable=True),
    sa.Column('cephfs_path_id', sa.String(length=36), nullable=True),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('mount_path', sa.String(length=1024), nullable=False),
    sa.Column('login_forbidden', sa.Boolean(), nullable=False),
    sa.Column('verify_state', sa.Enum('verifying', 'ok', 'failed', name='verify_state', native_enum=False, create_constraint=True, length=16), nullable=True),
    sa.Column('verify_message', sa.Text(), nullable=True),
    sa.Column('verified_at', robin.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(rbd_image_id IS NULL) <> (cephfs_path_id IS NULL)', name='account_of_one_volume'),
    sa.ForeignKeyConstraint(['cephfs_path_id'], ['cephfs_paths.id'], ),
    sa.ForeignKeyConstraint(['rbd_image_id'], ['rbd_images.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cephfs_path_id'),
    sa.UniqueConstraint('rbd_image_id'),
    sa.UniqueConstraint('username')
    )


def downgrade() -> None:
    op.drop_table('gateway_accounts')
