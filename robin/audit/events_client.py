"""`robin audit events`: the audit trail read through robin's API (GET /api/v2/audit/events), as a client on an
admin's machine needs no database or Ceph access. Events are printed oldest first, as a log is read; following
polls for the events written since."""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from robin.client.rest import RobinClient

EVENTS = "/api/v2/audit/events"
PAGE = 1000  # the API's largest page
DURATION = re.compile(r"(\d+)([smhdw])\Z")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# How far back each poll of a follower looks again: an event is written (and timed) before its transaction
# commits, so a poll may see a later event before an earlier one; and a change is decided after its row appears.
OVERLAP = timedelta(seconds=60)
COLUMNS = ("at", "actor", "action", "target", "project", "outcome")


def time_argument(value: str, now: datetime | None = None) -> str:
    """An RFC 3339 time for the API from `value`: a duration back from now (`90s`, `15m`, `1h`, `2d`, `1w`) or an
    RFC 3339 time with its zone. ValueError otherwise."""
    match = DURATION.match(value)
    if match:
        back = timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
        return ((now or datetime.now(UTC)) - back).isoformat()
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (add Z or an offset such as +02:00)")
    return moment.isoformat()


def newest(client: RobinClient, filters: dict, count: int) -> list[dict]:
    """The `count` newest events matching `filters` (every one when `count` is 0), oldest first."""
    found = []
    for event in _matching(client, filters, min(count, PAGE) if count else PAGE):
        found.append(event)
        if len(found) == count:
            break
    return found[::-1]


def _matching(client: RobinClient, filters: dict, limit: int) -> Iterator[dict]:
    """Every event matching `filters`, newest first, a page at a time."""
    cursor = None
    while True:
        params = {**filters, "limit": limit} | ({"cursor": cursor} if cursor else {})
        page = client.request("GET", EVENTS, params=params)
        yield from page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return


class Follower:
    """The events written after those already shown, each shown once, when its outcome is decided (a change's row
    is written `pending` and decided once Ceph answered). A row left pending by a worker that died is not
    shown: `--outcome pending` lists them."""

    def __init__(self, client: RobinClient, filters: dict, shown: list[dict]):
        self.client, self.filters = client, filters
        self.shown = {event["id"]: event["at"] for event in shown}
        self.since = max((_time(event["at"]) for event in shown), default=datetime.now(UTC))

    def poll(self) -> list[dict]:
        """The events decided since the last poll, oldest first."""
        since = self.since - OVERLAP
        if self.filters.get("since"):
            since = max(since, _time(self.filters["since"]))
        found = [event for event in _matching(self.client, {**self.filters, "since": since.isoformat()}, PAGE)
                 if event["id"] not in self.shown and self._decided(event)]
        found.reverse()
        for event in found:
            self.shown[event["id"]] = event["at"]
            self.since = max(self.since, _time(event["at"]))
        horizon = self.since - 2 * OVERLAP  # ids older than any poll looks at are forgotten
        self.shown = {key: at for key, at in self.shown.items() if _time(at) >= horizon}
        return found

    def _decided(self, event: dict) -> bool:
        return event["outcome"] != "pending" or self.filters.get("outcome") == "pending"


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def table_lines(events: list[dict], header: bool) -> list[str]:
    """Aligned columns: at (UTC, to the second), actor, action, target, project, outcome (with status and error)."""
    rows = [[_cell(event, column) for column in COLUMNS] for event in events]
    lines = [[column.upper() for column in COLUMNS]] if header else []
    lines += rows
    widths = [max(len(row[index]) for row in lines) for index in range(len(COLUMNS))] if lines else []
    return ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in lines]


def _cell(event: dict, column: str) -> str:
    if column == "at":
        return _time(event["at"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if column == "outcome":
        decided = f"{event['outcome']} {event['status_code']}" if event["status_code"] else event["outcome"]
        return f"{decided} {event['error_code']}" if event["error_code"] else decided
    return event[column] or "-"
