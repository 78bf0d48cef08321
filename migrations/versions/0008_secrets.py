"""secrets: token expiry and the metrics role, dashboard sessions, room for encrypted cluster keys

Revision ID: 0008_secrets
Revises: 0007_migration_records
Create Date: 2026-12-06 04:07:24.352800

Plain cluster keys left by an older robin are encrypted by robin itself at start (it has the secret key;
a migration may run where it does not), so this revision only widens their column.
"""
from alembic import op
import sqlalchemy as sa


import robin.db

revision = '0008_secrets'
down_revision = '0007_migration_records'
branch_labels = None
depends_on = None

OLD_ROLES = "role IN ('admin', 'member', 'auditor')"
NEW_ROLES = "role IN ('admin', 'member', 'auditor', 'metrics')"


def upgrade() -> None:
    op.create_table('dashboard_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_hash', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('created_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', robin.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_hash')
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_token_id'), ['token_id'], unique=False)

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', robin.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.drop_constraint('token_role', type_='check')
        batch_op.create_check_constraint('token_role', NEW_ROLES)

    with op.batch_alter_table('ceph_clusters', schema=None) as batch_op:
        batch_op.alter_column('cephx_key',
               existing_type=sa.VARCHAR(length=128),
               type_=sa.String(length=512),
               existing_nullable=True)


def downgrade() -> None:
    # Fails while encrypted keys are stored (they do not fit 128 characters), as it should: the robin of the
    # previous revision would take them for plain keys.
    with op.batch_alter_table('ceph_clusters', schema=None) as batch_op:
        batch_op.alter_column('cephx_key',
               existing_type=sa.String(length=512),
               type_=sa.VARCHAR(length=128),
               existing_nullable=True)

    op.execute("DELETE FROM api_tokens WHERE role = 'metrics'")
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint('token_role', type_='check')
        batch_op.create_check_constraint('token_role', OLD_ROLES)
        batch_op.drop_column('expires_at')

    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dashboard_sessions_token_id'))

    op.drop_table('dashboard_sessions')
