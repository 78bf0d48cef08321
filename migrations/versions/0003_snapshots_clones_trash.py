"""snapshots, clones, trash

Revision ID: 0003_snapshots_clones_trash
Revises: 0002_cephfs_paths
Create Date: 2026-11-27 12:22:30.379445
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0003_snapshots_clones_trash'
down_revision = '0002_cephfs_paths'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('snapshots',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('rbd_image_id', sa.String(length=36), nullable=True),
    sa.Column('cephfs_path_id', sa.String(length=36), nullable=True),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.Enum('creating', 'available', 'deleting', 'deleted', 'error', name='snapshot_state', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', robin.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('(rbd_image_id IS NULL) <> (cephfs_path_id IS NULL)', name='snapshot_of_one_volume'),
    sa.ForeignKeyConstraint(['cephfs_path_id'], ['cephfs_paths.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.ForeignKeyConstraint(['rbd_image_id'], ['rbd_images.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index('ix_snapshots_project_state', ['project_id', 'state'], unique=False)
        batch_op.create_index('uq_snapshots_cephfs_name', ['cephfs_path_id', 'name'], unique=True, sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.create_index('uq_snapshots_rbd_name', ['rbd_image_id', 'name'], unique=True, sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))

    with op.batch_alter_table('cephfs_paths', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purge_after', robin.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('purged_at', robin.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('trash_ref', sa.String(length=1024), nullable=True))

    with op.batch_alter_table('rbd_images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('parent_snapshot', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('purge_after', robin.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('purged_at', robin.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('trash_ref', sa.String(length=1024), nullable=True))
        batch_op.create_foreign_key('fk_rbd_images_parent_id', 'rbd_images', ['parent_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('rbd_images', schema=None) as batch_op:
        batch_op.drop_constraint('fk_rbd_images_parent_id', type_='foreignkey')
        batch_op.drop_column('trash_ref')
        batch_op.drop_column('purged_at')
        batch_op.drop_column('purge_after')
        batch_op.drop_column('parent_snapshot')
        batch_op.drop_column('parent_id')

    with op.batch_alter_table('cephfs_paths', schema=None) as batch_op:
        batch_op.drop_column('trash_ref')
        batch_op.drop_column('purged_at')
        batch_op.drop_column('purge_after')

    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index('uq_snapshots_rbd_name', sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.drop_index('uq_snapshots_cephfs_name', sqlite_where=sa.text("state != 'deleted'"), postgresql_where=sa.text("state != 'deleted'"))
        batch_op.drop_index('ix_snapshots_project_state')

    op.drop_table('snapshots')

