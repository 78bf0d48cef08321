"""What requests cost the database: the statements and commits of the API's engine while a block runs."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event

from robin.auth.service import token_cache
from robin.db import db


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    transactions: int = 0  # every commit, a read connection's included
    write_transactions: int = 0  # the commits of write transactions (db.writing, db.unit_of_work)


@contextmanager
def counting(cold_tokens: bool = True) -> Iterator[Counted]:
    """The statements and commits of the API's engine while the block runs (with cold_tokens, a token lookup
    included)."""
    counted = Counted()

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith("BEGIN"):
            counted.statements.append(statement)

    def on_commit(conn):
        counted.transactions += 1
        if conn.get_execution_options().get("robin_write_lock"):
            counted.write_transactions += 1

    if cold_tokens:
        token_cache.clear()
    event.listen(db.engine, "before_cursor_execute", on_execute)
    event.listen(db.engine, "commit", on_commit)
    try:
        yield counted
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)
        event.remove(db.engine, "commit", on_commit)
