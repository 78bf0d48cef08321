"""node role: tokens a CSI node fetches the cephx users of CephFS paths with, and nothing else

Revision ID: 0021_node_role
Revises: 0020_cephfs_layouts
Create Date: 2026-12-07 01:30:00
"""
from alembic import op


revision = '0021_node_role'
down_revision = '0020_cephfs_layouts'
branch_labels = None
depends_on = None

OLD_ROLES = "role IN ('admin', 'member', 'auditor', 'metrics')"
NEW_ROLES = "role IN ('admin', 'member', 'auditor', 'metrics', 'node')"


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint('token_role', type_='check')
        batch_op.create_check_constraint('token_role', NEW_ROLES)


def downgrade() -> None:
    # The previous revision knows no node token: they go (their nodes then mount with the node-stage secret's user).
    op.execute("DELETE FROM api_tokens WHERE role = 'node'")
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint('token_role', type_='check')
        batch_op.create_check_constraint('token_role', OLD_ROLES)
