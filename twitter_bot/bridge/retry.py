"""When to try a failed message again: capped exponential backoff with "equal jitter"."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n waits between half and all of min(maximum, initial * 2**(n-1)), or longer
    if told to.

    Half the ceiling is always waited ("equal jitter", not full jitter), so the
    attempts of a message span a known minimum: with the defaults (1 s doubling to
    300 s, 10 attempts) at least 255 s, and an outage shorter than that never
    dead-letters a message. Full jitter can draw near-zero waits, and did exhaust
    10 attempts within a 60 s gateway outage in the chaos run.
    """

    max_attempts: int
    initial: float
    maximum: float

    def ceiling(self, attempt: int) -> float:
        return min(self.maximum, self.initial * 2.0 ** max(attempt - 1, 0))

    def delay(self, attempt: int, hint: float | None = None) -> float:
        ceiling = self.ceiling(attempt)
        return max(random.uniform(ceiling / 2, ceiling), hint or 0.0)

    def shortest_span(self) -> float:
        """The least time between a message's first attempt and its last."""
        return sum(self.ceiling(n) / 2 for n in range(1, self.max_attempts))
