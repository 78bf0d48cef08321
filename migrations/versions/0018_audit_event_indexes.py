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
# PostgreSQL only, for the target filter (robin.audit.events): the request path's segments and the name a create's
# body gave, each through a function that cannot fail, since an index expression that raises refuses the audit row
# (a body's name may hold a \u0000 the json type keeps and text cannot; a path segment may be longer than an index
# entry may be). Both cut what they index at 128 characters, the longest name. SQLite scans: it has no arrays, and
# its databases are small.
FUNCTIONS = (
    """CREATE FUNCTION robin_audit_path_segments(target text) RETURNS text[] LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        RETURN ARRAY(SELECT left(segment, 128) FROM unnest(string_to_array(target, '/')) AS segment);
    END $$""",
    """CREATE FUNCTION robin_audit_created_name(details json) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        RETURN left(details #>> '{request,name}', 128);
    EXCEPTION WHEN data_exception THEN
        RETURN NULL;
    END $$""",
)


def upgrade() -> None:
    for column in FILTERED:
        op.create_index(f'ix_audit_events_{column}', 'audit_events', [column, 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        for function in FUNCTIONS:
            op.execute(function)
        # A GIN index without a pending list: a search reads all of the list until a vacuum empties it, and audit
        # rows come steadily.
        op.create_index('ix_audit_events_path_segments', 'audit_events', [text('robin_audit_path_segments(target)')],
                        unique=False, postgresql_using='gin', postgresql_with={'fastupdate': 'off'})
        op.create_index('ix_audit_events_created_name', 'audit_events', [text('robin_audit_created_name(details)')],
                        unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_audit_events_created_name', table_name='audit_events')
        op.drop_index('ix_audit_events_path_segments', table_name='audit_events')
        op.execute('DROP FUNCTION robin_audit_created_name(json)')
        op.execute('DROP FUNCTION robin_audit_path_segments(text)')
    for column in reversed(FILTERED):
        op.drop_index(f'ix_audit_events_{column}', table_name='audit_events')
