"""migration records

Revision ID: 0007_migration_records
Revises: 0006_volume_usage
Create Date: 2026-11-27 17:06:58.305410
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0007_migration_records'
down_revision = '0006_volume_usage'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('migration_records',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=160), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('volume_kind', sa.String(length=8), nullable=False),
    sa.Column('volume_name', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('migration_records', schema=None) as batch_op:
        batch_op.create_index('ix_migration_records_volume', ['project_id', 'volume_kind', 'volume_name'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('migration_records', schema=None) as batch_op:
        batch_op.drop_index('ix_migration_records_volume')

    op.drop_table('migration_records')
