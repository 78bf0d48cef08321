"""usage index: a project's live volumes' sizes, read from an index alone by every quota reservation

Revision ID: 0022_usage_index
Revises: 0021_node_role
Create Date: 2026-12-07 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0022_usage_index'
down_revision = '0021_node_role'
branch_labels = None
depends_on = None

LIVE = sa.text("state != 'deleted'")
# table -> its size columns: the promised size and, while resizing, the size asked for
SIZES = {'rbd_images': ('size_bytes', 'target_size_bytes'), 'cephfs_paths': ('quota_bytes', 'target_quota_bytes')}


def upgrade() -> None:
    for table, (size, target_size) in SIZES.items():
        op.create_index(f'ix_{table}_live_usage', table, ['project_id', 'state', size, target_size], unique=False,
                        sqlite_where=LIVE, postgresql_where=LIVE)


def downgrade() -> None:
    for table in SIZES:
        op.drop_index(f'ix_{table}_live_usage', table_name=table, sqlite_where=LIVE, postgresql_where=LIVE)
