"""Remembering recently accepted event ids, so X's duplicate deliveries are queued once."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """The answer to "may I publish this event id?".

    ``owned``: publish it and settle it. ``duplicate``: already queued, drop it.
    Otherwise ``pending`` is the outcome of a concurrent copy's publish.
    """

    owned: bool = False
    duplicate: bool = False
    pending: asyncio.Future[bool] | None = None


class RecentEventIds:
    """A bounded, time-limited set of event ids that were durably queued.

    An id is remembered only after its publish was confirmed: a delivery that
    failed with 503 must be accepted when X redelivers it. Claiming never waits,
    so concurrent deliveries holding overlapping ids cannot deadlock.
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._seen:
            oldest_id, accepted_at = next(iter(self._seen.items()))
            if accepted_at > cutoff and len(self._seen) <= self._max_entries:
                break
            del self._seen[oldest_id]

    def claim(self, event_id: str) -> Claim:
        """Claim ``event_id`` for publishing; an owned claim must be settled."""
        self._expire()
        if event_id in self._seen:
            return Claim(duplicate=True)
        pending = self._in_flight.get(event_id)
        if pending is not None:
            return Claim(pending=pending)
        self._in_flight[event_id] = asyncio.get_running_loop().create_future()
        return Claim(owned=True)

    def settle(self, event_id: str, accepted: bool) -> None:
        """Record the outcome of an owned claim and wake concurrent copies."""
        if accepted:
            self._seen[event_id] = self._clock()
            self._seen.move_to_end(event_id)
            self._expire()
        pending = self._in_flight.pop(event_id, None)
        if pending is not None and not pending.done():
            pending.set_result(accepted)
