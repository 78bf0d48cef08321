"""Only one worker at a time runs the maintenance loop, on either database."""
from __future__ import annotations

from robin.maintenance import Leadership


def test_one_leader_at_a_time(app, database_url):
    first, second = Leadership(database_url), Leadership(database_url)
    try:
        assert first.acquire() is True
        assert second.acquire() is False
        assert first.acquire() is True  # kept once held
        first.release()
        assert second.acquire() is True
    finally:
        first.release()
        second.release()
