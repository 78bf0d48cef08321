"""core: clusters, projects, quotas, rbd images, tokens, audit events

Revision ID: 0001_core
Revises: 
Create Date: 2026-11-27 11:51:56.949346
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0001_core'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=160), nullable=False),
    sa.Column('action', sa.String(length=160), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('project', sa.String(length=63), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('request_id', sa.String(length=36), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_at', ['at'], unique=False)
        batch_op.create_index('ix_audit_events_project', ['project'], unique=False)

    op.create_table('ceph_clusters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('conf_path', sa.String(length=1024), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('role', sa.Enum('admin', 'member', 'auditor', name='token_role', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', robin.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('quotas',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('max_bytes', sa.BigInteger(), nullable=False),
    sa.Column('max_volumes', sa.Integer(), nullable=False),
    sa.Column('max_snapshots', sa.Integer(), nullable=False),
    sa.Column('updated_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('max_bytes >= 0 AND max_volumes >= 0 AND max_snapshots >= 0', name='quota_non_negative'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id')
    )
    op.create_table('rbd_images',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('pool', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('target_size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('state', sa.Enum('creating', 'available', 'resizing', 'deleting', 'deleted', 'error', name='volume_state', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', robin.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['ceph_clusters.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rbd_images', schema=None) as batch_op:
        batch_op.create_index('ix_rbd_images_state', ['state'], unique=False)
        batch_op.create_index('uq_rbd_images_ceph_name', ['cluster_id', 'pool', 'name'], unique=True, sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.create_index('uq_rbd_images_project_name', ['project_id', 'name'], unique=True, sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))



def downgrade() -> None:
    with op.batch_alter_table('rbd_images', schema=None) as batch_op:
        batch_op.drop_index('uq_rbd_images_project_name', sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.drop_index('uq_rbd_images_ceph_name', sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.drop_index('ix_rbd_images_state')

    op.drop_table('rbd_images')
    op.drop_table('quotas')
    op.drop_table('api_tokens')
    op.drop_table('projects')
    op.drop_table('ceph_clusters')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_project')
        batch_op.drop_index('ix_audit_events_at')

    op.drop_table('audit_events')
