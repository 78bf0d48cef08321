"""Exponential backoff with jitter, so that replicas and retried objects do not retry in lockstep."""
from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float, maximum: float):
        self.base, self.maximum = base, maximum
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt: base * 2^failures, capped, with up to 10% jitter."""
        delay = min(self.maximum, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return delay * (0.9 + random.random() * 0.1)

    def reset(self) -> None:
        self.failures = 0
