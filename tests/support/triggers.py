"""Real database triggers that make SQLite or PostgreSQL refuse or skip chosen rows: how tests make a write fail or
lose a race at an exact statement, without touching robin's code."""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from robin.db import db


@contextmanager
def row_trigger(name: str, event: str, table: str, condition: str, refuse: str | None = None) -> Iterator[None]:
    """A BEFORE `event` (INSERT, UPDATE) trigger on `table` for the rows matching `condition` (SQL over OLD/NEW,
    the same on both databases): it fails the statement with the message `refuse`, or without one skips the
    row silently, as if another writer had moved it first. Dropped afterwards."""
    trigger = re.sub(r"\W", "_", name)
    with db.engine.begin() as connection:
        if db.is_sqlite:
            action = f"RAISE(ABORT, '{refuse}')" if refuse else "RAISE(IGNORE)"
            connection.exec_driver_sql(f"CREATE TRIGGER {trigger} BEFORE {event} ON {table} WHEN {condition} "
                                       f"BEGIN SELECT {action}; END")
        else:
            action = f"RAISE EXCEPTION '{refuse}'" if refuse else "RETURN NULL"
            connection.exec_driver_sql(f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                                       f"IF {condition} THEN {action}; END IF; RETURN NEW; END $$")
            connection.exec_driver_sql(f"CREATE TRIGGER {trigger} BEFORE {event} ON {table} "
                                       f"FOR EACH ROW EXECUTE FUNCTION {trigger}()")
    try:
        yield
    finally:
        with db.engine.begin() as connection:
            connection.execute(text(f"DROP TRIGGER {trigger}" if db.is_sqlite
                                    else f"DROP TRIGGER {trigger} ON {table}"))
            if not db.is_sqlite:
                connection.execute(text(f"DROP FUNCTION {trigger}()"))
