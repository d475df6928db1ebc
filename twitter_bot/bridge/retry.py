"""When to try a failed message again: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n waits uniform(0, min(maximum, initial * 2**(n-1))), or longer if told to."""

    max_attempts: int
    initial: float
    maximum: float

    def delay(self, attempt: int, hint: float | None = None) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** max(attempt - 1, 0))
        return max(random.uniform(0, ceiling), hint or 0.0)
