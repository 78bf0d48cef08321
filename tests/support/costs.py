"""What requests cost the database: the statements and commits of the API's engine while a block runs."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event

from robin.auth.service import token_cache
from robin.db import Direct, db


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    transactions: int = 0  # every commit, a read connection's included
    write_transactions: int = 0  # the commits of write transactions (db.writing, db.unit_of_work)


@contextmanager
def counting(cold_tokens: bool = True) -> Iterator[Counted]:
    """The statements and commits of the API's engine while the block runs (with cold_tokens, a token lookup
    included). SQLite's second commits run on the driver's connection (db.Direct), unseen by the engine's events: they
    are counted as the statements and the write transaction they are."""
    counted = Counted()
    execute, commit = Direct.execute, Direct.commit

    def direct_execute(transaction, statement, parameters):
        counted.statements.append(str(statement))
        return execute(transaction, statement, parameters)

    def direct_commit(transaction):
        commit(transaction)
        counted.transactions += 1
        counted.write_transactions += 1

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
    Direct.execute, Direct.commit = direct_execute, direct_commit
    try:
        yield counted
    finally:
        Direct.execute, Direct.commit = execute, commit
        event.remove(db.engine, "before_cursor_execute", on_execute)
        event.remove(db.engine, "commit", on_commit)
