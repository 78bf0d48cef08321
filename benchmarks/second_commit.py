"""A write's second commit alone, under concurrency: --threads threads each move a row of their own back and forth
(--moves times a block), the way the second commit was (`db.writing()`, a compare-and-set UPDATE, its row count
read: four round trips on PostgreSQL) against `db.compare_and_set` (one pipeline), in alternating blocks (--blocks
of each). No audit hook, no server, no Ceph: the database's part only. Prints each block's moves per second and
median latency.

    .venv/bin/python benchmarks/second_commit.py --db-url URL [--threads 8] [--moves 100] [--blocks 6]

URL is a PostgreSQL database (it is migrated; rows are added to its audit_events), straight or through
`python -m tests.support.pg_proxy URL --delay-ms 0.25` (PostgreSQL on "another host").
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import bindparam, insert, update  # noqa: E402

from robin.audit.models import AuditEvent  # noqa: E402
from robin.db import db, upgrade, utcnow  # noqa: E402

# A row's move from one outcome to the other, as a state change is: only from the value its writer read.
MOVE = (update(AuditEvent).where(AuditEvent.id == bindparam("row_id"), AuditEvent.outcome == bindparam("from_value"))
        .values(outcome=bindparam("to_value"), at=bindparam("at", type_=AuditEvent.__table__.c.at.type)))


def in_a_transaction(parameters: dict) -> bool:
    with db.writing() as connection:
        return connection.execute(MOVE, parameters).rowcount == 1


def pipelined(parameters: dict) -> bool:
    return db.compare_and_set(MOVE, parameters)


PATHS = {"four round trips": in_a_transaction, "compare_and_set": pipelined}


def new_rows(count: int) -> list[int]:
    with db.writing() as connection:
        return [connection.execute(insert(AuditEvent), {
            "at": utcnow(), "actor": "benchmark", "action": "move", "target": "second_commit", "outcome": "a",
            "status_code": 0, "request_id": "", "details": {}}).inserted_primary_key[0] for _ in range(count)]


def block(move, rows: list[int], moves: int) -> tuple[float, float]:
    """Every thread moves its row `moves` times; (moves per second, median latency in ms)."""
    latencies: list[float] = []

    def mover(row: int) -> None:
        value = db_value[row]
        for _ in range(moves):
            other = "b" if value == "a" else "a"
            started = time.perf_counter()
            if not move({"row_id": row, "from_value": value, "to_value": other, "at": utcnow()}):
                raise SystemExit(f"row {row} was not {value!r}")
            latencies.append(time.perf_counter() - started)
            value = other
        db_value[row] = value

    threads = [threading.Thread(target=mover, args=(row,)) for row in rows]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(rows) * moves / (time.perf_counter() - started), statistics.median(latencies) * 1000


db_value: dict[int, str] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="a PostgreSQL database")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--moves", type=int, default=100, help="per thread and block")
    parser.add_argument("--blocks", type=int, default=6, help="of each path, alternating")
    args = parser.parse_args()
    upgrade(args.db_url)
    db.configure(args.db_url, pool_size=args.threads + 2)
    try:
        rows = new_rows(args.threads)
        db_value.update((row, "a") for row in rows)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in PATHS}
        for number in range(args.blocks):
            order = list(PATHS) if number % 2 == 0 else list(reversed(PATHS))
            for name in order:
                results[name].append(block(PATHS[name], rows, args.moves))
        print(f"load average after the runs: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
        print("| path | moves/s (blocks) | median ms (blocks) |")
        print("|---|---|---|")
        for name, blocks in results.items():
            print(f"| {name} | {', '.join(f'{rate:.0f}' for rate, _ in blocks)} | "
                  f"{', '.join(f'{median:.2f}' for _, median in blocks)} |")
    finally:
        db.dispose()


if __name__ == "__main__":
    main()
