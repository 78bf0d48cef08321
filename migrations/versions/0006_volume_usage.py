"""volume usage

Revision ID: 0006_volume_usage
Revises: 0005_gateway_accounts
Create Date: 2026-11-27 15:34:45.727557
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0006_volume_usage'
down_revision = '0005_gateway_accounts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('volume_usage',
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('used_bytes', sa.BigInteger(), nullable=False),
    sa.Column('method', sa.String(length=40), nullable=False),
    sa.Column('measured_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('volume_id')
    )


def downgrade() -> None:
    op.drop_table('volume_usage')
