"""Failed gateway logins, counted per account and per source address, slow down and then lock out guessing.

After k failures in a row a key (an account, or an address) waits base * 2**(k-1) seconds (at most `max_delay`)
before its next password is even checked, and after `lockout` failures it is refused outright, without a
check, until `window` seconds passed since its last failure. A success clears its account's count, not its
address's: a guesser holding one account of its own must not reset the count of the address it sprays from.
Counts live in the gateway's memory (one process), and a key with no failure for `window` seconds is forgotten.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Keys remembered at most: beyond, the ones whose window has passed are dropped first (names an attacker makes up
# must not grow the gateway's memory without end).
MAX_KEYS = 100_000


@dataclass(frozen=True)
class ThrottleRules:
    delay: float  # seconds after the first failure, doubled at each further one
    max_delay: float
    account_lockout: int  # failures in a row that lock an account
    address_lockout: int  # failures in a row that lock a source address
    window: float  # seconds after its last failure that a key is locked, and remembered


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    def __init__(self, rules: ThrottleRules, clock: Callable[[], float] = time.monotonic):
        self.rules = rules
        self._clock = clock
        self._failures: dict[tuple[str, str], _Failures] = {}

    def locked(self, username: str, address: str) -> str | None:
        """What is locked out (`account` or `address`), or None."""
        if self._count("account", username) >= self.rules.account_lockout:
            return "account"
        if self._count("address", address) >= self.rules.address_lockout:
            return "address"
        return None

    def delay(self, username: str, address: str) -> float:
        """Seconds to wait before checking this attempt's password."""
        failures = max(self._count("account", username), self._count("address", address))
        if failures == 0:
            return 0.0
        return min(self.rules.delay * 2 ** (failures - 1), self.rules.max_delay)

    def failed(self, username: str, address: str) -> tuple[int, int]:
        """Count a failure; the account's and the address's counts now."""
        now = self._clock()
        if len(self._failures) >= MAX_KEYS:
            self._forget_old(now)
        return self._add(("account", username), now), self._add(("address", address), now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(("account", username), None)

    def _count(self, kind: str, name: str) -> int:
        failures = self._failures.get((kind, name))
        if failures is None or self._clock() - failures.last >= self.rules.window:
            return 0
        return failures.count

    def _add(self, key: tuple[str, str], now: float) -> int:
        count = self._count(*key) + 1
        self._failures[key] = _Failures(count, now)
        return count

    def _forget_old(self, now: float) -> None:
        for key in [key for key, failures in self._failures.items() if now - failures.last >= self.rules.window]:
            del self._failures[key]
        while len(self._failures) >= MAX_KEYS:  # all recent: drop the oldest
            del self._failures[min(self._failures, key=lambda key: self._failures[key].last)]
