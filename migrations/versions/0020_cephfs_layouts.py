"""cephfs layouts: each CephFS volume records whether it is a directory or a mgr subvolume (its group, and the source of a clone under way)

Revision ID: 0020_cephfs_layouts
Revises: 0019_usage_history
Create Date: 2026-12-07 01:30:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0020_cephfs_layouts'
down_revision = '0019_usage_history'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every volume made before is a directory.
    with op.batch_alter_table('cephfs_paths', schema=None) as batch_op:
        batch_op.add_column(sa.Column('layout', sa.String(length=16), server_default='directory', nullable=False))
        batch_op.add_column(sa.Column('subvolume_group', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('clone_of', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('clone_snapshot', sa.String(length=128), nullable=True))
        batch_op.create_foreign_key('fk_cephfs_paths_clone_of', 'cephfs_paths', ['clone_of'], ['id'])
        batch_op.create_index('ix_cephfs_paths_clone_of', ['clone_of'], unique=False,
                              sqlite_where=sa.text('clone_of IS NOT NULL'),
                              postgresql_where=sa.text('clone_of IS NOT NULL'))


def downgrade() -> None:
    # Without the column, robin would take a subvolume for a directory and act on the wrong path.
    subvolumes = op.get_bind().execute(sa.text("SELECT count(*) FROM cephfs_paths WHERE layout = 'subvolume'"))
    if subvolumes.scalar():
        raise RuntimeError('cephfs_paths holds subvolumes, which the schema before 0019 cannot describe; delete '
                           'and purge them first')
    with op.batch_alter_table('cephfs_paths', schema=None) as batch_op:
        batch_op.drop_index('ix_cephfs_paths_clone_of', sqlite_where=sa.text('clone_of IS NOT NULL'),
                            postgresql_where=sa.text('clone_of IS NOT NULL'))
        batch_op.drop_constraint('fk_cephfs_paths_clone_of', type_='foreignkey')
        batch_op.drop_column('clone_snapshot')
        batch_op.drop_column('clone_of')
        batch_op.drop_column('subvolume_group')
        batch_op.drop_column('layout')
