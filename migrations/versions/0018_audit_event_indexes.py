"""audit event indexes: the filters of GET /api/v2/audit/events, each newest first by id

Revision ID: 0018_audit_event_indexes
Revises: 0017_volume_totals
Create Date: 2026-12-06 21:30:00
"""
from alembic import op
from sqlalchemy import text


revision = '0018_audit_event_indexes'
down_revision = '0017_volume_totals'
branch_labels = None
depends_on = None

FILTERED = ('actor', 'action', 'outcome')
# PostgreSQL only, as robin.audit.events spells them: a name among the request path's segments (a GIN index
# without a pending list, which every search would read whole until a vacuum), and the name a create's body gave.
# SQLite has no arrays; its databases are small enough to scan.
PATH_SEGMENTS = text("string_to_array(target, '/')")
NAME_IN_BODY = text("(details #>> '{request,name}')")


def upgrade() -> None:
    for column in FILTERED:
        op.create_index(f'ix_audit_events_{column}', 'audit_events', [column, 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.create_index('ix_audit_events_path_segments', 'audit_events', [PATH_SEGMENTS], unique=False,
                        postgresql_using='gin', postgresql_with={'fastupdate': 'off'})
        op.create_index('ix_audit_events_name_in_body', 'audit_events', [NAME_IN_BODY], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_audit_events_name_in_body', table_name='audit_events')
        op.drop_index('ix_audit_events_path_segments', table_name='audit_events')
    for column in reversed(FILTERED):
        op.drop_index(f'ix_audit_events_{column}', table_name='audit_events')
